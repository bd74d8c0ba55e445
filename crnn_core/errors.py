"""The project's exceptions. The CLI turns each into one line on stderr and an exit code."""


class CrnnError(Exception):
    """A failure the user can act on; its message is shown as is."""


class DatasetError(CrnnError):
    """A dataset folder or label file cannot be used."""


class ImageError(CrnnError):
    """An image cannot be read or is unusable."""


class ConfigError(CrnnError):
    """A model or training config is invalid or cannot be found."""


class ModelFileError(CrnnError):
    """A model file or checkpoint is missing, damaged, unsafe or of an unknown format."""


class ExportError(CrnnError):
    """An export failed, or the exported file does not match the eager model."""


class WriteError(CrnnError):
    """A file could not be written (full disk, read-only folder); its previous version is intact."""


class ConstraintError(CrnnError):
    """A pattern or lexicon that cannot be used."""
