"""Software rendering of meshes (NumPy, no OpenGL): see :mod:`hmr_jax.render.rasterizer`."""
from hmr_jax.render.rasterizer import (
    MESH_COLOR,
    Fragments,
    PerspectiveCamera,
    contact_sheet,
    draw_points,
    rasterize,
    render_mesh,
    shade,
    side_view,
    write_png,
)

__all__ = [
    "MESH_COLOR",
    "Fragments",
    "PerspectiveCamera",
    "contact_sheet",
    "draw_points",
    "rasterize",
    "render_mesh",
    "shade",
    "side_view",
    "write_png",
]
