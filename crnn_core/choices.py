"""Names users choose between, written once: the library checks them, the CLI offers them.

This module imports nothing, so the CLI can build its option choices from it without
slowing `crnn --help`.
"""

AUGMENT_LEVELS = ("none", "light", "medium", "heavy")  # training augmentation strength, weakest first
# Old names still accepted: "medium" was called "default" until `light` became the default (issue 15)
AUGMENT_RENAMED = {"default": "medium"}
DEFAULT_AUGMENT = "light"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # training arithmetic
ALPHABET_MODES = ("union", "new", "keep")  # how --init's alphabet meets the data's (finetune.py)
DEFAULT_ARCHITECTURE = "crnn-fast"  # what `crnn train` builds without --model (models/*.yaml)
