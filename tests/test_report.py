"""`vaelab report RUN`: one self-contained HTML file (nothing fetched, names escaped)."""

import re

from helpers import TINY_MNIST
from vaelab import cli


def test_the_report_holds_the_runs_numbers_and_nothing_external(mnist_cache, tmp_path):
    run = tmp_path / "vae"
    sets = [a for s in [*TINY_MNIST, "train.epochs=2"] for a in ("--set", s)]
    opts = ["--cache", str(mnist_cache)]
    assert cli.main(["train", "configs/mnist_vae.toml", "--out", str(run), "--no-progress",
                     *opts, *sets]) == 0  # fmt: skip
    assert cli.main(["eval", str(run), "--k", "8", "--limit", "40", *opts]) == 0
    png = (run / "model.safetensors").parent / "odd <i>name.png"  # a name to escape
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
    secret = tmp_path / "secret.txt"
    secret.write_text("TOKEN-42")
    (run / "leak.png").symlink_to(secret)  # a link in a shared folder is never followed
    out = tmp_path / "report.html"
    assert cli.main(["report", str(run), "--out", str(out), *opts]) == 0
    page = out.read_text()
    assert 'kind = "vae"' in page and "widths = [64]" in page  # the config
    assert "2 of 2" in page  # epochs
    nll = __import__("json").loads((run / "eval.json").read_text())[-1]["nll"]
    assert f"{nll:.6g}" in page  # the evaluation's numbers
    assert "odd &lt;i&gt;name.png" in page and "<i>name" not in page
    import base64

    assert "not a regular file" in page and base64.b64encode(b"TOKEN-42").decode()[:8] not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"(href|src)=\"(https?:|//)", page) and "<script" not in page


def test_report_refusals_are_one_line(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing")]) == 1
    assert (
        cli.main(["report", "tests/fixtures/runs/vae_tiny", "--out", str(tmp_path / "r.pdf")]) == 1
    )
    err = capsys.readouterr().err
    assert "must end in .html" in err and "Traceback" not in err
