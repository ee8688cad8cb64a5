"""supervisord.conf as rendered from the settings."""
from __future__ import annotations

from meshtrader.runtime.config import REPO_ROOT, load_settings
from meshtrader.runtime.supervise import default_paths, render


def test_committed_supervisord_conf_is_the_rendered_one():
    expected = render(load_settings(), default_paths(), with_redis=True)
    assert (REPO_ROOT / "supervisord.conf").read_text() == expected, "run `make conf` after changing programs"
