"""The experiment command line: its log messages are shown, libraries' chatter is not."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_info_messages_are_shown_even_when_a_library_configured_logging_first(tmp_path):
    # absl's first message installs a root handler, which would make a plain basicConfig a
    # no-op; a fresh interpreter makes the order of imports the one a script sees.
    script = textwrap.dedent(
        """
        import dataclasses, logging, sys
        from absl import logging as absl_logging
        absl_logging.warning("a library message before main()")
        from jaxpref.train.experiment import main

        @dataclasses.dataclass(frozen=True)
        class Config:
            size: int = 2

            @classmethod
            def small(cls):
                return cls(size=1)

        def run(config, workdir):
            logging.getLogger("recipe").info("recipe message size=%d", config.size)
            absl_logging.info("absl chatter")  # orbax logs its checkpoint saves this way
            logging.getLogger("orbax.checkpoint").info("orbax chatter")
            absl_logging.warning("absl warning")
            return {"size": config.size}

        main(Config(), run, argv=["--workdir", sys.argv[1], "--small"])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "recipe message size=1" in out.stderr, out.stderr
    assert "absl warning" in out.stderr  # libraries' warnings still show, their INFO not
    assert "absl chatter" not in out.stderr and "orbax chatter" not in out.stderr
    assert (tmp_path / "results.json").exists()
