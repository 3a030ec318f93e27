"""Models: encoders, fusions and heads (each a registry with a ``create_*`` factory), the
standard multimodal model, optimizer parameter groups, and PgM's components."""

# hf and pretrained register the encoder families timm:, torchvision: and hf: (their packages
# are imported only when such an encoder is built)
from unipair.models import hf, pretrained  # noqa: F401
from unipair.models.encoders import ENCODERS, create_encoder, list_encoders
from unipair.models.fusion import FUSIONS, create_fusion
from unipair.models.heads import HEADS, create_head
from unipair.models.multimodal import EncoderConfig, ModelConfig, MultimodalModel
from unipair.models.params import ParamGroup

__all__ = [
    "ENCODERS",
    "FUSIONS",
    "HEADS",
    "EncoderConfig",
    "ModelConfig",
    "MultimodalModel",
    "ParamGroup",
    "create_encoder",
    "create_fusion",
    "create_head",
    "list_encoders",
]
