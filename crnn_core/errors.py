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


class UsageError(CrnnError):
    """Options that cannot be used together or a value out of range: exit code 2, like a bad flag."""

    exit_code = 2


# -- quoting user data and foreign messages in our one-line errors ----------------------------
QUOTE_LIMIT = 60
FOREIGN_LIMIT = 120


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` quoted for a message (repr: control characters show as escapes), cut after `limit`.

    A label or path can be 200,000 characters long; a message quotes its start and its length.
    """
    text = str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def first_line(message: object, limit: int = FOREIGN_LIMIT) -> str:
    """The first line of another library's message (or its exception's type name), cut to `limit`.

    torch, onnxruntime and Pillow write paragraphs; our errors are one line.
    """
    text = str(message).strip()
    line = text.splitlines()[0].strip() if text else ""
    if not line:
        line = type(message).__name__ if isinstance(message, BaseException) else "no details"
    if len(line) > limit and ". " in line:  # torch adds paragraphs of advice after its first sentence
        line = line.split(". ")[0] + "."
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"
