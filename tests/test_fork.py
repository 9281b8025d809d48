"""A process forked after ctcodec has used its thread pool must still work (the pool's
threads do not survive fork; without care the child would wait on them forever)."""

import multiprocessing as mp

import numpy as np

import ctcodec


def _decode_sum(path):
    return float(sum(t.sum() for _, t in ctcodec.decompress_file(path, framework="numpy")))


def test_forked_child_decodes(tmp_path):
    rng = np.random.default_rng(0)
    # large enough that decoding splits rows over the pool
    w = np.where(rng.random((2048, 1200)) < 0.5, 0, rng.standard_normal((2048, 1200))).astype(np.float32)
    ctcodec.save_compressed({"a.weight": w, "b.weight": w[:64].copy()}, tmp_path / "f.safetensors")
    expected = _decode_sum(tmp_path / "f.safetensors")  # starts the pool in the parent

    ctx = mp.get_context("fork")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_decode_sum, (tmp_path / "f.safetensors",))
        assert result.get(timeout=120) == expected
        compress = pool.apply_async(ctcodec.save_compressed, ({"c.weight": w}, tmp_path / "g.safetensors"))
        compress.get(timeout=120)
    (_, back), = ctcodec.decompress_file(tmp_path / "g.safetensors", framework="numpy")
    np.testing.assert_array_equal(back, w)
