"""Per-object and per-material styles: masks from the render's Cryptomatte passes.

A style slot may be limited to an object, a collection or a material.  Its
mask is that object's (or material's) anti-aliased coverage in the render's
Cryptomatte pass, so soft edges come from the renderer and the masks follow
the animation for free.  The passes are turned on for the run
(`enable_passes`) and restored afterwards, like the Vector pass in
`motion`; each render is saved as a multilayer EXR (`motion.save_motion_exr`)
whose path goes to the worker as `mattes`, with the regions as `region_specs`
builds them (docs/worker-protocol.md, "Regions").  The engine reads the
coverage (engine/exr.py) and applies one style per region (engine/regions.py).

Pixels no limited slot covers take the slots that are not limited; when every
slot is limited, they stay as rendered.  *Far Stroke Size* (`Job.depth_scale`
below 1) also reads the render's Depth pass: the engine splits the picture (or
each region) by depth and shrinks the style scale with distance.  Plain
functions; no torch.
"""

from __future__ import annotations

import bpy

from .errors import StyleError
from .job import Job, Style

# Style slot "Limit To" values -> the Cryptomatte pass their names are looked up in.
LIMIT_KINDS = {"OBJECT": "object", "COLLECTION": "object", "MATERIAL": "material"}
# Cryptomatte levels: how many overlapping objects per pixel keep their own coverage.
CRYPTOMATTE_LEVELS = 6


def limit_of(target) -> tuple[str, tuple[str, ...]] | None:
    """(Cryptomatte kind, names) of what a style is limited to: an Object, a Collection (its objects, nested
    ones included) or a Material; None means everywhere."""
    if target is None:
        return None
    if isinstance(target, bpy.types.Object):
        return "object", (target.name,)
    if isinstance(target, bpy.types.Collection):
        names = tuple(sorted(obj.name for obj in target.all_objects))
        if not names:
            raise StyleError(f"the collection {target.name!r} a style is limited to has no objects")
        return "object", names
    if isinstance(target, bpy.types.Material):
        return "material", (target.name,)
    raise StyleError(f"a style can be limited to an object, a collection or a material, not {target!r}")


def slot_limit(item) -> tuple[str, tuple[str, ...]] | None:
    """The limit of a style slot (`NeuralStyleStyleItem`), checked."""
    if item.limit == "EVERYWHERE":
        return None
    target = {"OBJECT": item.limit_object, "COLLECTION": item.limit_collection, "MATERIAL": item.limit_material}[
        item.limit]
    if target is None:
        noun = {"OBJECT": "an object", "COLLECTION": "a collection", "MATERIAL": "a material"}[item.limit]
        raise StyleError(f"a style slot is limited to {noun} but none is chosen")
    return limit_of(target)


def is_limited(styles: list[Style]) -> bool:
    return any(style.limit is not None for style in styles)


def region_specs(styles: list[Style]) -> list[dict] | None:
    """The worker's `regions` for `styles`: one region per distinct limit (its slots blended by their
    weights), then the rest for the unlimited slots (or kept as rendered when there are none); None when no
    slot is limited."""
    if not is_limited(styles):
        return None
    groups: dict[tuple, list[int]] = {}
    for index, style in enumerate(styles):
        groups.setdefault(style.limit, []).append(index)
    specs = []
    for limit, indices in groups.items():
        if limit is None:
            continue
        kind, names = limit
        specs.append(_region(styles, indices, {kind: list(names)}))
    specs.append(_region(styles, groups.get(None, []), "rest"))  # no styles: kept as rendered
    return specs


def _region(styles: list[Style], indices: list[int], mask) -> dict:
    spec = {"styles": indices, "mask": mask}
    if indices:
        if sum(styles[i].weight for i in indices) <= 0:
            raise StyleError("the style weights of a limited slot (or of the unlimited ones) are all zero")
        spec["blend"] = [styles[i].weight for i in indices]
    return spec


def kinds(styles: list[Style]) -> set[str]:
    """The Cryptomatte passes the styles' limits need ("object", "material")."""
    return {style.limit[0] for style in styles if style.limit is not None}


def needs_passes(job: Job) -> bool:
    """Whether the job reads the render's passes: styles limited to objects/materials, or Far Stroke Size."""
    return is_limited(job.styles) or job.depth_scale < 1


def check_limits(job: Job, animation: bool) -> None:
    """Limits and Far Stroke Size need a render (the passes come from it) and optimisation (not fast mode)."""
    if not needs_passes(job):
        return
    if is_limited(job.styles):
        what, need, work = "styles limited to objects or materials", "need", "work"
    else:
        what, need, work = "Far Stroke Size", "needs", "works"
    if job.source != "RENDER" and not (job.image is not None and job.image.type == "RENDER_RESULT"):
        raise StyleError(f"{what} {need} the render as the source: the masks and depth come from its passes")
    if animation and job.animation_mode == "FAST":
        raise StyleError(f"{what} {work} with Optimize, not Fast mode")


def enable_passes(scene: bpy.types.Scene, wanted: set[str], depth: bool = False) -> dict:
    """Turn on the Cryptomatte passes `wanted` ("object", "material"), and the Depth pass with `depth`, in
    every view layer; returns what `restore_passes` puts back."""
    saved = {}
    for layer in scene.view_layers:
        saved[layer.name] = (layer.use_pass_cryptomatte_object, layer.use_pass_cryptomatte_material,
                             layer.pass_cryptomatte_depth, layer.use_pass_z)
        if "object" in wanted:
            layer.use_pass_cryptomatte_object = True
        if "material" in wanted:
            layer.use_pass_cryptomatte_material = True
        if wanted:
            layer.pass_cryptomatte_depth = max(layer.pass_cryptomatte_depth, CRYPTOMATTE_LEVELS)
        if depth:
            layer.use_pass_z = True
    return saved


def restore_passes(scene: bpy.types.Scene, saved: dict) -> None:
    for layer in scene.view_layers:
        if layer.name in saved:
            (layer.use_pass_cryptomatte_object, layer.use_pass_cryptomatte_material,
             layer.pass_cryptomatte_depth, layer.use_pass_z) = saved[layer.name]
