"""Inference: load a model once, then meshes (and cameras, tokens, SMPL parameters) of the people
in any number of images.

    from hmr_jax.inference import Predictor
    predictor = Predictor.load("converted/mega_hrnet", tokenizer="converted/mesh_vqvae_54")
    for image in predictor.predict(["photo.jpg", "crowd.jpg"], num_samples=1):
        for person in image.persons:
            print(person.vertices.shape, person.camera_translation)

* :mod:`~hmr_jax.inference.predictor` -- :class:`Predictor`: images (files or arrays) and boxes
  (or a :class:`~hmr_jax.detection.Detector`) in, :class:`ImagePrediction` / :class:`Person` out;
  all persons of all images go through fixed-size batches.
* :mod:`~hmr_jax.inference.model` -- :func:`load_image_model` / :class:`ImageModel`: normalised
  crops in, meshes out (MEGA deterministic or stochastic, VQ-HPS); :func:`load_generator` /
  :class:`Generator`: random meshes from the unconditional MEGA.
* :mod:`~hmr_jax.inference.crops` -- :func:`crop_person`: the one crop path (the original demo's
  arithmetic), :func:`read_image`.
* :mod:`~hmr_jax.inference.smpl` -- :func:`fit_body_params`: SMPL(+H) parameters of meshes.

Models are read through :mod:`hmr_jax.checkpoints` (converted folders and ``train.py`` workdirs).
"""
from hmr_jax.inference.crops import InferenceError, PersonCrop, crop_person, read_image, square_box
from hmr_jax.inference.model import (DEFAULT_BATCH_SIZE, Generator, ImageModel, bucket_sizes, load_generator,
                                     load_image_model)
from hmr_jax.inference.predictor import ImagePrediction, Person, Predictor
from hmr_jax.inference.smpl import fit_body_params, load_smpl_model
from hmr_jax.mesh.io import load_faces  # the topology's faces (sample.py reads them through here)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Generator",
    "ImageModel",
    "ImagePrediction",
    "InferenceError",
    "Person",
    "PersonCrop",
    "Predictor",
    "bucket_sizes",
    "crop_person",
    "fit_body_params",
    "load_faces",
    "load_generator",
    "load_image_model",
    "load_smpl_model",
    "read_image",
    "square_box",
]
