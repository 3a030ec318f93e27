"""Property tests (hypothesis) for collation and missing-modality masks."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from unipair.data.batch import Sample, collate
from unipair.data.missing import missing_masks

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@st.composite
def sample_lists(draw):
    names = draw(st.lists(st.sampled_from("abcde"), min_size=2, max_size=4, unique=True))
    dims = {m: draw(shapes) for m in names}
    n = draw(st.integers(1, 6))
    samples = []
    for i in range(n):
        present = {m: draw(st.booleans()) for m in names}
        inputs = {m: torch.randn(dims[m]) if present[m] else torch.zeros(dims[m]) for m in names}
        samples.append(Sample(inputs, present, draw(st.integers(0, 9)), index=i))
    return samples


@settings(max_examples=60, deadline=None)
@given(sample_lists())
def test_collate_stacks_inputs_masks_and_labels(samples) -> None:
    batch = collate(samples)
    assert len(batch) == len(samples)
    for m in batch.modalities:
        assert batch.inputs[m].shape == (len(samples), *samples[0].inputs[m].shape)
        assert batch.present[m].dtype == torch.bool
        for i, s in enumerate(samples):
            assert bool(batch.present[m][i]) == s.present[m]
            assert torch.equal(batch.inputs[m][i], s.inputs[m])
    assert batch.labels.tolist() == [s.label for s in samples]


@settings(max_examples=60, deadline=None)
@given(sample_lists(), st.integers(0, 2**16))
def test_with_missing_hides_through_present_and_zeros(samples, seed) -> None:
    batch = collate(samples)
    masks = missing_masks(len(batch), batch.modalities, 0.5, seed, keep_one=False)
    hidden = batch.with_missing(masks)
    for m in batch.modalities:
        assert torch.equal(hidden.present[m], batch.present[m] & ~masks[m])
        gone = ~hidden.present[m] & masks[m]
        assert torch.count_nonzero(hidden.inputs[m][gone]) == 0
        kept = ~masks[m]
        assert torch.equal(hidden.inputs[m][kept], batch.inputs[m][kept])


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 200),
    st.integers(2, 5),
    st.floats(0.0, 1.0),
    st.integers(0, 2**16),
)
def test_missing_masks_keep_one_modality_and_are_seeded(n, k, rate, seed) -> None:
    names = [f"m{i}" for i in range(k)]
    masks = missing_masks(n, names, rate, seed)
    hidden = torch.stack([masks[m] for m in names])
    assert not hidden.all(0).any(), "some sample lost every modality"
    again = missing_masks(n, names, rate, seed)
    assert all(torch.equal(masks[m], again[m]) for m in names)
    if rate == 0.0:
        assert not hidden.any()


@settings(max_examples=50, deadline=None)
@given(st.integers(10, 300), st.floats(0.0, 0.5), st.floats(0.0, 0.5), st.integers(0, 999))
def test_single_modality_masks_are_nested_across_rates(n, r1, r2, seed) -> None:
    lo, hi = sorted((r1, r2))
    a = missing_masks(n, ["x", "y"], {"x": lo}, seed, keep_one=False)["x"]
    b = missing_masks(n, ["x", "y"], {"x": hi}, seed, keep_one=False)["x"]
    assert not (a & ~b).any(), "a lower rate hid a sample a higher rate kept"


class _SharedInWorker(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> bool:
        from unipair.data.batch import batch_tensors

        x = batch_tensors({"a": ((2, 3), torch.float32), "b": ((5,), torch.uint8)})
        return x["a"].is_shared() and x["a"].untyped_storage() is x["b"].untyped_storage()


def test_batch_tensors_are_built_in_shared_memory_inside_workers() -> None:
    """A worker's batch crosses to the main process without a copy into shared memory, as
    one buffer."""
    from unipair.data.batch import batch_tensors

    assert not batch_tensors({"a": ((2, 3), torch.float32)})["a"].is_shared()
    loader = torch.utils.data.DataLoader(_SharedInWorker(), batch_size=None, num_workers=1)
    assert list(loader) == [True, True]


def test_quantized_batches_are_checked_and_dequantized_per_channel() -> None:
    import pytest

    from unipair.data.batch import MultimodalBatch

    # [B=2, 2 pixels, C=2] channels-last -> [2, C, 2 pixels]
    x = torch.tensor([[[0, 255], [10, 20]], [[1, 2], [3, 4]]], dtype=torch.uint8)
    present = torch.tensor([True, False])
    batch = MultimodalBatch({"v": x}, {"v": present}, torch.tensor([0, 1]),
                            quantized={"v": ((1.0, 0.5), (0.0, -1.0))})  # fmt: skip
    out = batch.dequantize().inputs["v"]
    assert out.dtype == torch.float32 and out.shape == (2, 2, 2)
    assert out[0].tolist() == [[0.0, 10.0], [126.5, 9.0]]
    assert out[1].abs().max() == 0  # an absent row is zeros, as everywhere
    for bad in ({"v": ((1.0,), (0.0,))}, {"w": ((1.0, 1.0), (0.0, 0.0))}):
        with pytest.raises(ValueError, match="quantized inputs must be uint8"):
            MultimodalBatch({"v": x}, {"v": present}, torch.tensor([0, 1]), quantized=bad)
    with pytest.raises(ValueError, match="quantized inputs must be uint8"):
        MultimodalBatch({"v": x.float()}, {"v": present}, torch.tensor([0, 1]),
                        quantized={"v": ((1.0, 1.0), (0.0, 0.0))})  # fmt: skip


def test_dequantized_clips_reach_a_resnet_frame_by_frame_without_a_copy() -> None:
    """Frames stay channels-last from decoding to the backbone: the [B * k, 3, H, W] frames
    ResNet-18 reads are a view of the dequantized batch."""
    from unipair.data.batch import MultimodalBatch
    from unipair.models.encoders import per_frame

    x = torch.randint(0, 256, (2, 3, 8, 8, 3), dtype=torch.uint8)  # [B, k, H, W, C]
    batch = MultimodalBatch({"v": x}, {"v": torch.ones(2, dtype=torch.bool)}, torch.tensor([0, 1]),
                            quantized={"v": ((1.0,) * 3, (0.0,) * 3)})  # fmt: skip
    clips = batch.dequantize().inputs["v"]
    assert clips.shape == (2, 3, 3, 8, 8) and torch.equal(
        clips[1, :, 2], x[1, 2].permute(2, 0, 1).float()
    )
    seen: list[torch.Tensor] = []
    per_frame(lambda f: seen.append(f) or f.mean((2, 3)), clips, channels_last=True)
    assert seen[0].shape == (6, 3, 8, 8) and seen[0].data_ptr() == clips.data_ptr()
