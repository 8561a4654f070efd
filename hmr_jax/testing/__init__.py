"""Stand-ins for what the project cannot ship or what tests need small, in one place.

* :mod:`~hmr_jax.testing.smpl_files`: stand-in SMPL / SMPL+H model files (the real ones are
  licensed) with the real kinematic trees, 6890 vertices and the real file layouts, to try the
  body model, the fits and the data converters (``write_standin_model``);
* :mod:`~hmr_jax.testing.toy_data`: tiny, fully known image / mesh record datasets
  (``write_toy_image_dataset``, ``write_toy_mesh_dataset``, ``toy_image_record``);
* :mod:`~hmr_jax.testing.box_person`: the box person that stands in for the Anny body in the
  synthetic data generator (``StandInBody``, ``python -m data_prep.synthetic --standin-body``).

Nothing here is used by the library itself; everything is public so that users can try the
tools without downloads.
"""
from hmr_jax.testing.box_person import StandInBody
from hmr_jax.testing.smpl_files import make_standin_arrays, write_standin_model
from hmr_jax.testing.toy_data import toy_image_record, write_toy_image_dataset, write_toy_mesh_dataset

__all__ = ["StandInBody", "make_standin_arrays", "toy_image_record", "write_standin_model",
           "write_toy_image_dataset", "write_toy_mesh_dataset"]
