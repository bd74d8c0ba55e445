"""The `crnn` command line: a thin layer over crnn_core."""
