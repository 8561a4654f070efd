"""`make demo`: the embedded default, end to end.

The synthetic data pipeline, training and evaluation that the demo chains together are not
built yet (see the README's status table). Until they are, this prints the plan instead of
pretending to run it, and exits with status 0 so `make demo` shows what it will do.
"""
from __future__ import annotations

PLAN = """\
hmr_jax demo: what `make demo` will run once the embedded default exists
  1. python -m data_prep.synthetic --out demo_out/data --num N   (Anny bodies rendered over backgrounds)
  2. python -m hmr_jax.mesh.build (connection hierarchy for the synthetic topology)
  3. python train.py --config configs/synthetic_mesh_vqvae.py     (tokenizer, a few minutes)
  4. python train.py --config configs/synthetic_mega.py           (MEGA on the tokens)
  5. python evaluate.py ... and python sample.py ...              (numbers vs. the mean mesh, pictures)
  6. demo_out/report.md with the figures and pictures
Status: not implemented yet -- nothing was run. See README.md, section 'Status'."""


def main() -> None:
    """Print the demo plan (no work is done yet)."""
    print(PLAN)


if __name__ == "__main__":
    main()
