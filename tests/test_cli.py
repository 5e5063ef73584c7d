"""`tinylm generate` refuses bad decoding options before it loads anything (the model path here does not exist:
a check that ran after loading would fail on the path instead)."""

import pytest

from tinylm.cli import main


@pytest.mark.parametrize("args, message", [
    (["--num-beams", "0"], "--num-beams must be >= 1, got 0"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1], got 1.5"),
    (["--temperature", "0"], "--temperature must be > 0, got 0.0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1, got 0"),
    (["--max-new-tokens", "-3"], "--max-new-tokens must be >= 1, got -3"),
    (["--top-k", "0"], "--top-k must be >= 1, got 0"),
])
def test_bad_generate_options_fail_first_naming_the_option(tmp_path, args, message):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "x", *args])
    assert str(e.value) == f"error: {message}"
