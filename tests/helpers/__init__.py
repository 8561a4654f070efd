"""What the tests share beyond pytest fixtures (those are in ``tests/conftest.py``).

* :mod:`helpers.stages`: quick training configs and tiny stage inputs;
* :mod:`helpers.inference`: tiny MEGA / VQ-HPS models written as converted folders and workdirs,
  rendered test people;
* :mod:`helpers.fuzz`: the fuzzing harness of ``tests/fuzz``.

Stand-ins of licensed files and datasets that the library itself also uses (the demo, the
benchmarks, ``data_prep``) are in :mod:`hmr_jax.testing`. ``pytest.ini`` puts ``tests/`` on
``sys.path``, so tests import these as ``helpers.*``.
"""
import pathlib

#: the checkout's root folder
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
