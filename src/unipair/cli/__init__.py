"""Command-line interface (typer): ``unipair train | eval | compare | viz | methods | datasets``."""
