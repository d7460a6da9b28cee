"""`lamina style-transfer` driven through click's CliRunner on tiny generated PNGs."""
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from safetensors.numpy import save_file

from lamina.cli import cli
from lamina.style import feature_network

FAST = ["--steps", "2", "--size", "16", "--content-layer", "conv1_2", "--style-layers", "conv1_1,conv1_2"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def images(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(tmp_path / "content.png")
    Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(tmp_path / "style.png")
    return tmp_path / "content.png", tmp_path / "style.png"


def test_style_transfer_writes_the_image_and_the_cost_curve(images, tmp_path):
    content, style = images
    out = tmp_path / "G.png"
    result = invoke("style-transfer", content, style, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        img.load()
        assert img.size == (16, 13) and img.mode == "RGB"  # 20×16 with the longer side resized to 16
    with Image.open(tmp_path / "G-cost.png") as plot:
        assert plot.format == "PNG"
    assert f"wrote {out} (16×13)" in result.output and "in 2 steps" in result.output
    assert "random He-initialised filters (seed 0)" in result.output
    assert not list(tmp_path.glob(".*.tmp"))


def test_help_lists_the_options():
    result = invoke("style-transfer", "--help")
    assert result.exit_code == 0
    for option in ("--out", "--steps", "--content-layer", "--style-layers", "--alpha", "--beta", "--lr", "--size",
                   "--model", "--weights", "--seed"):
        assert option in result.output
    assert "style-transfer" in invoke("--help").output


@pytest.mark.parametrize("extra,message", [
    (["--steps", "-1"], "Invalid value for '--steps'"),
    (["--style-layers", "conv1_1,conv9_9"], "no layer named 'conv9_9'"),
    (["--content-layer", "conv1_3"], "no layer named 'conv1_3'"),
    (["--model", "vgg61"], "Invalid value for '--model'"),
    (["--style-weights", "0.5"], "got 1 weights for 2 style layers"),
    (["--style-weights", "a,b"], "expected comma-separated numbers"),
    (["--lr", "0"], "Invalid value for '--lr'"),
    (["--out", "G.xyz"], "the suffix '.xyz' names no image format"),
], ids=["steps", "style-layer", "content-layer", "model", "weights-count", "weights-numbers", "lr", "out-format"])
def test_bad_usage_exits_with_2(images, tmp_path, extra, message):
    content, style = images
    result = invoke("style-transfer", content, style, "--out", tmp_path / "G.png",
                    *["--style-layers", "conv1_1,conv1_2", "--content-layer", "conv1_2"], *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "G.png").exists()


def test_missing_out_and_missing_files_are_clear(images, tmp_path):
    content, style = images
    result = invoke("style-transfer", content, style)
    assert result.exit_code == 2 and "Missing option '--out'" in result.output
    result = invoke("style-transfer", tmp_path / "nope.png", style, "--out", tmp_path / "G.png")
    assert result.exit_code == 2 and "nope.png' does not exist" in result.output
    result = invoke("style-transfer", content, style, "--out", tmp_path / "no" / "G.png", *FAST)
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "text.png").write_text("not an image")
    result = invoke("style-transfer", tmp_path / "text.png", style, "--out", tmp_path / "G.png", *FAST)
    assert result.exit_code == 1 and "text.png is not an image Pillow can read" in result.output


def test_weights_are_loaded_and_checked(images, tmp_path):
    content, style = images
    net = feature_network("vgg16", upto="conv1_2", seed=5)
    save_file(net.state_dict(), str(tmp_path / "w5.safetensors"))
    save_file(feature_network("vgg16", upto="conv1_2", seed=7).state_dict(), str(tmp_path / "w7.safetensors"))
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    assert invoke("style-transfer", content, style, "--out", a, *FAST, "--seed", "5").exit_code == 0
    # --seed 5 draws the filters the file holds, so the image is the same; other filters give another one
    result = invoke("style-transfer", content, style, "--out", b, *FAST, "--seed", "5",
                    "--weights", tmp_path / "w5.safetensors")
    assert result.exit_code == 0 and "weights from" in result.output
    np.testing.assert_array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    assert invoke("style-transfer", content, style, "--out", c, *FAST, "--seed", "5",
                  "--weights", tmp_path / "w7.safetensors").exit_code == 0
    assert np.abs(np.asarray(Image.open(a), float) - np.asarray(Image.open(c), float)).max() > 2

    state = net.state_dict()
    state["1.W"] = np.zeros((3, 3, 64, 32), np.float32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    result = invoke("style-transfer", content, style, "--out", tmp_path / "d.png", *FAST,
                    "--weights", tmp_path / "bad.safetensors")
    assert result.exit_code == 1
    assert "'1.W' has shape (3, 3, 64, 64) in the model but (3, 3, 64, 32)" in result.output
    del state["1.W"]
    save_file(state, str(tmp_path / "missing.safetensors"))
    result = invoke("style-transfer", content, style, "--out", tmp_path / "d.png", *FAST,
                    "--weights", tmp_path / "missing.safetensors")
    assert result.exit_code == 1 and "missing ['1.W']" in result.output
