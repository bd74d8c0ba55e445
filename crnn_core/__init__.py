"""crnn: train and run sequence-from-image recognisers (CNN + BiLSTM + CTC)."""


def __getattr__(name: str):
    # Looked up on first use: importlib.metadata costs ~10-50 ms, which `crnn --help` need not pay.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("crnn")
        except PackageNotFoundError:  # running from a source tree that was not installed
            value = "0.0.0+source"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
