"""Blender's side of temporal coherence: render frames with their motion vectors.

The engine (engine/temporal.py) warps the previous stylized frame along the
Vector pass, so each rendered frame is also saved as a multilayer EXR holding
the Combined, Vector and Depth passes (`save_motion_exr`).  Cycles writes the
Vector pass only with motion blur off, so `enable_motion_passes` turns it off
for the run and `restore_settings` puts everything back.

Run as a script (`python motion.py OUT_DIR [--frames N --size PX --step PX]`,
with `bpy` importable) it renders `demo_scene`, a tiny animation with known
motion, which the temporal tests and benchmark use.  (The animation is only
evaluated in the window's scene, so the demo fills that scene of an empty file.)  Plain functions; no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import bpy

RENDER_RESULT = "Render Result"
# The image settings a multilayer EXR with exact (32-bit float) vectors needs.
_EXR_SETTINGS = {"media_type": "MULTI_LAYER_IMAGE", "file_format": "OPEN_EXR_MULTILAYER", "color_depth": "32", "exr_codec": "ZIP"}


def enable_motion_passes(scene: bpy.types.Scene) -> dict:
    """Turn on the Vector and Depth passes of every view layer and turn off motion blur.

    Returns the previous values for `restore_settings`.
    """
    saved = {"use_motion_blur": scene.render.use_motion_blur, "layers": {}}
    for layer in scene.view_layers:
        saved["layers"][layer.name] = (layer.use_pass_vector, layer.use_pass_z)
        layer.use_pass_vector = True
        layer.use_pass_z = True
    scene.render.use_motion_blur = False
    return saved


def restore_settings(scene: bpy.types.Scene, saved: dict) -> None:
    scene.render.use_motion_blur = saved["use_motion_blur"]
    for layer in scene.view_layers:
        if layer.name in saved["layers"]:
            layer.use_pass_vector, layer.use_pass_z = saved["layers"][layer.name]


def save_motion_exr(scene: bpy.types.Scene, path: str) -> str:
    """Save the last render (all passes) as a multilayer EXR; the output format is restored afterwards."""
    result = bpy.data.images.get(RENDER_RESULT)
    if result is None:
        raise RuntimeError("there is no render to save motion vectors from")
    settings = scene.render.image_settings
    names = [name for name in _EXR_SETTINGS if hasattr(settings, name)]  # media_type is new in Blender 5.0
    keep = {name: getattr(settings, name) for name in names}
    try:
        for name in names:
            setattr(settings, name, _EXR_SETTINGS[name])
        result.save_render(path, scene=scene)
    finally:
        for name, value in keep.items():
            setattr(settings, name, value)
    return path


def demo_scene(scene: bpy.types.Scene, size: int = 64, frames: int = 4, step: int = 6, samples: int = 8) -> None:
    """Fill `scene` (best an empty one) with an orthographic camera over a static
    textured backdrop and a textured square moving `step` pixels right and
    `step // 2` pixels up per frame.  Emission shaders only, so a few samples
    give a clean image.
    """
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames
    camera = bpy.data.cameras.new("demo camera")
    camera.type = "ORTHO"
    camera.ortho_scale = 2.0  # world units across the frame: size / 2 pixels per unit
    scene.camera = _add(scene, "demo camera", camera, (0.0, 0.0, 5.0))
    _add(scene, "backdrop", _square(4.0, _checker("backdrop", (0.15, 0.45, 0.9, 1), 5.0, 3.0)), (0.0, 0.0, -1.0))
    mover = _add(scene, "mover", _square(0.9, _checker("mover", (1.0, 0.35, 0.1, 1), 3.0, 0.0)), (0.0, 0.0, 0.0))
    unit = 2.0 / size
    for frame in range(1, frames + 1):
        offset = frame - (frames + 1) / 2
        mover.location = (offset * step * unit, offset * (step // 2) * unit, 0.0)
        mover.keyframe_insert("location", frame=frame)  # a key on every frame: exact, known positions


def _add(scene, name, data, location):
    obj = bpy.data.objects.new(name, data)
    obj.location = location
    scene.collection.objects.link(obj)
    return obj


def _square(side: float, material: bpy.types.Material) -> bpy.types.Mesh:
    half = side / 2
    mesh = bpy.data.meshes.new("demo square")
    mesh.from_pydata([(-half, -half, 0), (half, -half, 0), (half, half, 0), (-half, half, 0)], [], [(0, 1, 2, 3)])
    mesh.materials.append(material)
    return mesh


def _checker(name: str, colour, scale: float, distortion: float) -> bpy.types.Material:
    """Emission of a checker, warped by noise when `distortion` > 0, so every region has texture."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5 creates node trees on request
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    emission = nodes.new("ShaderNodeEmission")
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = scale
    checker.inputs["Color1"].default_value = colour
    checker.inputs["Color2"].default_value = (0.05, 0.05, 0.05, 1)
    if distortion:
        noise = nodes.new("ShaderNodeTexNoise")
        noise.inputs["Scale"].default_value = distortion
        links.new(noise.outputs["Color"], checker.inputs["Vector"])
    links.new(checker.outputs["Color"], emission.inputs["Color"])
    links.new(emission.outputs["Emission"], output.inputs["Surface"])
    return material


def render_demo(out_dir: str, size: int = 64, frames: int = 4, step: int = 6, samples: int = 8) -> dict:
    """Render `demo_scene` in a new empty file to out_dir/frame_####.exr (multilayer); returns what was made.

    Replaces the open file: for scripts and tests only.
    """
    os.makedirs(out_dir, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    demo_scene(scene, size, frames, step, samples)
    enable_motion_passes(scene)
    paths = []
    for frame in range(1, frames + 1):
        scene.frame_set(frame)
        bpy.ops.render.render(scene=scene.name)
        paths.append(save_motion_exr(scene, os.path.join(out_dir, f"frame_{frame:04d}.exr")))
    # Pixels per frame, in image coordinates (x right, y down): the square moves up.
    return {"frames": paths, "motion_px": [step, -(step // 2)], "size": size}


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Render the motion-vector demo animation as multilayer EXRs.")
    parser.add_argument("out_dir")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--step", type=int, default=6, help="pixels the square moves right per frame")
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(render_demo(args.out_dir, args.size, args.frames, args.step, args.samples)))
    return 0


if __name__ == "__main__":
    # Under `blender -b -P motion.py -- ARGS` the script's arguments follow "--".
    sys.exit(_main(sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else sys.argv[1:]))
