"""Stroke size from texel density: the engine's `style_scale` for a material texture.

At Style Scale 1 the style image spans STYLE_WORLD_SIZE world units of the
surface, whatever the texture's resolution (`texture_style_scale`):

    Style Scale x STYLE_WORLD_SIZE x texels_per_unit / longest texture side,
    texels_per_unit = sqrt(width x height x UV area x Mapping scale / surface area)

(UV area summed over the mesh's faces in its active UV map, for a UDIM tile
over the faces in that tile; Mapping scale: |x y| of the Mapping nodes on the
node's Vector input (`mapping_area_factor`); surface area in world units with
the object's scale), so a 4K and a 1K texture of the same surface get the same
style_scale, and the style covers the same part of the object.  Used by
`material_textures`; plain functions, no torch (docs/material-textures.md).
"""

from __future__ import annotations

import math

import bpy
import numpy as np

# World units (Blender units: metres) the style image spans at Style Scale 1 on a material texture.
STYLE_WORLD_SIZE = 1.0
STYLE_SCALE_RANGE = (0.05, 4.0)  # engine.StyleOptions.style_scale's accepted range


def mapping_area_factor(node: bpy.types.Node | None) -> float:
    """How many times the texture repeats per unit of UV area because of Mapping nodes on the node's Vector
    input (through reroutes): |Scale x x Scale y| for a Point or Vector mapping, its inverse for a Texture
    mapping; 1 without a Mapping node.  A linked (driven by nodes) or zero Scale counts as 1."""
    factor, seen = 1.0, set()
    socket = node.inputs["Vector"] if node is not None else None
    while socket is not None and socket.is_linked:
        upstream = socket.links[0].from_node
        if upstream.name in seen:
            break
        seen.add(upstream.name)
        if upstream.type == "MAPPING":
            scale = upstream.inputs["Scale"]
            area = abs(scale.default_value[0] * scale.default_value[1])
            if not scale.is_linked and area > 0 and upstream.vector_type in ("POINT", "VECTOR", "TEXTURE"):
                factor *= 1 / area if upstream.vector_type == "TEXTURE" else area
        elif upstream.type != "REROUTE":
            break
        socket = upstream.inputs[0]  # Mapping's Vector, a reroute's input
    return factor


def _uv_tile_numbers(uv: np.ndarray) -> np.ndarray:
    """The UDIM tile number (1001 + u + 10 v) of each UV point."""
    cell = np.floor(uv).astype(np.int64)
    return 1001 + cell[..., 0] + 10 * cell[..., 1]


def texels_per_unit(obj: bpy.types.Object, image: bpy.types.Image, tile: int | None = None,
                    node: bpy.types.Node | None = None) -> float | None:
    """Texture pixels per world unit along the surface, from the mesh's UV and world areas; None without UVs.

    `tile`: a UDIM tile's number: its own size, and only the triangles whose UVs fall in it (all of them when
    none does).  `node`: the Image Texture node, whose Mapping scale multiplies the UV area."""
    mesh = obj.data
    if not isinstance(mesh, bpy.types.Mesh) or mesh.uv_layers.active is None or not mesh.polygons:
        return None
    mesh.calc_loop_triangles()
    count = len(mesh.loop_triangles)
    if count == 0:
        return None
    verts = np.empty(count * 3, np.int32)
    loops = np.empty(count * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", verts)
    mesh.loop_triangles.foreach_get("loops", loops)
    co = np.empty(len(mesh.vertices) * 3, np.float64)
    mesh.vertices.foreach_get("co", co)
    co = co.reshape(-1, 3) @ np.array(obj.matrix_world)[:3, :3].T  # translation does not change areas
    uv = np.empty(len(mesh.loops) * 2, np.float64)
    mesh.uv_layers.active.data.foreach_get("uv", uv)
    tri = co[verts.reshape(-1, 3)]
    t = uv.reshape(-1, 2)[loops.reshape(-1, 3)]
    width, height = image.size
    if tile is not None:
        tile_data = next((item for item in image.tiles if item.number == tile), None)
        if tile_data is not None:
            width, height = tile_data.size
        inside = _uv_tile_numbers(t.mean(axis=1)) == tile
        if inside.any():
            tri, t = tri[inside], t[inside]
    world = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    e1, e2 = t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum() * mapping_area_factor(node)
    if world <= 0 or uv_area <= 0 or width * height == 0:
        return None
    return math.sqrt(width * height * uv_area / world)


def texture_style_scale(style_scale: float, obj: bpy.types.Object, image: bpy.types.Image, tile: int | None = None,
                        node: bpy.types.Node | None = None) -> float:
    """The engine's style_scale that makes the style span `style_scale` x STYLE_WORLD_SIZE world units
    of the surface (see the module docstring); the panel's value as it is when the mesh has no UVs."""
    density = texels_per_unit(obj, image, tile, node)
    if density is None:
        return style_scale
    size = next((item.size for item in image.tiles if item.number == tile), image.size) if tile else image.size
    low, high = STYLE_SCALE_RANGE
    return min(high, max(low, style_scale * STYLE_WORLD_SIZE * density / max(size)))
