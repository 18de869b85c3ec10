"""The core package without torch: the torch vocoders are an optional extra."""

import subprocess
import sys
import textwrap

from tests.conftest import ROOT


def test_core_package_works_without_torch():
    """With torch and bigvgan unimportable: the package, its CLI and griffinlim work, and a
    torch vocoder fails with an ImportError that says what to install."""
    script = textwrap.dedent("""
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "bigvgan"):
                    raise ImportError(f"{name} is blocked")

        sys.meta_path.insert(0, Blocker())
        import numpy as np
        import tnca_jax, tnca_jax.cli, vocoders

        vocoder = vocoders.load("griffinlim")
        audio = vocoder(np.full((1, vocoder.contract.n_mels, 4), -5.0, np.float32))
        print(audio.shape, float(np.abs(audio).max()) > 0)
        for name in ("hifigan", "bigvgan"):
            try:
                vocoders.load(name, "somewhere")
            except ImportError as err:
                print(name, "pip install torch==2.13.0" in str(err))
        print("torch" in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["(1, 2048) True", "hifigan True", "bigvgan True",
                                           "False"]
