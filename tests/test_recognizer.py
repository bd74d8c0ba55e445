from conftest import render_text
from crnn_core.recognizer import Recognizer


def test_an_image_reads_the_same_alone_or_in_a_batch(tiny_model):
    recognizer = Recognizer(tiny_model, batch_size=8)
    images = [render_text(t) for t in ("1", "12345", "42", "987", "5", "31337")]
    together = recognizer.predict_images(images)
    alone = [recognizer.predict_images([image])[0] for image in images]
    assert [r.text for r in together] == [r.text for r in alone]
    for a, b in zip(together, alone):
        assert abs(a.confidence - b.confidence) < 1e-5


def test_bundled_codes_model_reads_sample_images():
    from pathlib import Path

    from crnn_core.data import discover

    samples = discover(Path(__file__).resolve().parents[1] / "sample_data" / "sidecar").samples
    recognizer = Recognizer("codes-fast")
    results = list(recognizer.predict_paths([s.path for s in samples]))
    assert [r.path for r in results] == [str(s.path) for s in samples]
    correct = sum(r.text == s.text for r, s in zip(results, samples))
    assert correct >= len(samples) * 0.8  # 24 unseen crops; the model scores ~98% on validation


def test_array_batches_match_tensor_batches_and_padding_rounds_per_image():
    import numpy as np

    from crnn_core.data import to_array_batch, to_tensor_batch

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, w), dtype=np.uint8) for w in (33, 40, 47)]
    as_array, widths = to_array_batch(arrays, 8)
    as_tensor, tensor_widths = to_tensor_batch(arrays, 8)
    assert widths == tensor_widths == [33, 40, 47] and as_array.shape == (3, 1, 32, 48)
    assert np.array_equal(as_array, as_tensor.numpy())

