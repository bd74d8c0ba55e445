"""crnn: train and run sequence-from-image recognisers (CNN + BiLSTM + CTC)."""

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("crnn")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
