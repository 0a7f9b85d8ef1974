"""A tiny Cycles animation with known motion, a moving shadow and revealed ground, rendered with its passes.

`demo_scene` fills a scene with an orthographic camera looking straight down
on textured ground lit by a sun, and a textured cube moving a known number of
pixels per frame.  The cube uncovers ground behind it and drags its shadow
across ground that does not move (Blender's Vector pass is zero there): the
three things temporal coherence must follow.  `render_demo` renders it to
multilayer EXRs (Combined, Vector and Depth passes) through the add-on's own
hooks (neural_style_addon/motion.py), so the temporal tests and
benchmarks/bench_temporal.py measure against exact motion.

Run with `bpy` importable, from the repository root:
`python -m benchmarks.demo_scene OUT_DIR [--frames N --width PX --height PX --step PX]`.
(The animation is only evaluated in the window's scene, so the demo fills
that scene of an empty file.)  Plain functions; no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import bpy

from neural_style_addon.motion import enable_motion_passes, save_motion_exr

# World units across the frame's width; the cube's edge and the sun's direction in those units and degrees.
VIEW_WIDTH = 3.0
CUBE = 0.7
SUN_TILT, SUN_TURN = 50.0, 30.0


def demo_scene(scene: bpy.types.Scene, width: int = 96, height: int = 64, frames: int = 4, step: int = 6,
               samples: int = 4) -> None:
    """Fill `scene` (best an empty one): ground, a sun, and a cube moving `step` pixels right and
    `step // 2` pixels up per frame, seen from straight above.

    Direct light only (no bounces) from one hard-edged sun, plus a little
    emission so shadows keep their texture: a few samples give a clean image,
    and pixels that do not change are exactly equal from frame to frame.
    """
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.cycles.max_bounces = 0
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames
    camera = bpy.data.cameras.new("demo camera")
    camera.type = "ORTHO"
    camera.ortho_scale = VIEW_WIDTH
    scene.camera = _add(scene, "demo camera", camera, (0.0, 0.0, 5.0))
    _add(scene, "ground", _box(3 * VIEW_WIDTH, 0.0, _material("ground", (0.2, 0.5, 0.9, 1), 6.0)), (0.0, 0.0, 0.0))
    cube = _add(scene, "cube", _box(CUBE, CUBE, _material("cube", (1.0, 0.4, 0.1, 1), 3.0)), (0.0, 0.0, 0.0))
    sun = bpy.data.lights.new("demo sun", "SUN")
    sun.energy, sun.angle = 3.0, 0.0
    _add(scene, "demo sun", sun, (0.0, 0.0, 3.0)).rotation_euler = (math.radians(SUN_TILT), 0.0, math.radians(SUN_TURN))
    scene.world = bpy.data.worlds.new("demo world")  # black: no light but the sun
    unit = VIEW_WIDTH / width
    for frame in range(1, frames + 1):
        offset = frame - (frames + 1) / 2
        cube.location = (offset * step * unit, offset * (step // 2) * unit, 0.0)
        cube.keyframe_insert("location", frame=frame)  # a key on every frame: exact, known positions


def _add(scene, name, data, location):
    obj = bpy.data.objects.new(name, data)
    obj.location = location
    scene.collection.objects.link(obj)
    return obj


def _box(side: float, tall: float, material: bpy.types.Material) -> bpy.types.Mesh:
    """A `side` x `side` square at z = 0, or a box `tall` high standing on it."""
    half = side / 2
    corners = [(-half, -half), (half, -half), (half, half), (-half, half)]
    if not tall:
        vertices, faces = [(x, y, 0.0) for x, y in corners], [(0, 1, 2, 3)]
    else:
        vertices = [(x, y, z) for z in (0.0, tall) for x, y in corners]
        faces = [(0, 3, 2, 1), (4, 5, 6, 7), (0, 1, 5, 4), (1, 2, 6, 5), (2, 3, 7, 6), (3, 0, 4, 7)]
    mesh = bpy.data.meshes.new("demo box")
    mesh.from_pydata(vertices, [], faces)
    mesh.materials.append(material)
    return mesh


def _material(name: str, colour, scale: float) -> bpy.types.Material:
    """A diffuse checker warped by noise (texture everywhere) plus a faint emission of it (lit shadows)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5 creates node trees on request
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    nodes.clear()
    checker = nodes.new("ShaderNodeTexChecker")
    checker.inputs["Scale"].default_value = scale
    checker.inputs["Color1"].default_value = colour
    checker.inputs["Color2"].default_value = (*(0.35 * c for c in colour[:3]), 1.0)
    noise = nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 3.0
    links.new(noise.outputs["Color"], checker.inputs["Vector"])
    diffuse = nodes.new("ShaderNodeBsdfDiffuse")
    glow = nodes.new("ShaderNodeEmission")
    glow.inputs["Strength"].default_value = 0.3
    both = nodes.new("ShaderNodeAddShader")
    links.new(checker.outputs["Color"], diffuse.inputs["Color"])
    links.new(checker.outputs["Color"], glow.inputs["Color"])
    links.new(diffuse.outputs["BSDF"], both.inputs[0])
    links.new(glow.outputs["Emission"], both.inputs[1])
    links.new(both.outputs["Shader"], nodes.new("ShaderNodeOutputMaterial").inputs["Surface"])
    return material


def render_demo(out_dir: str, width: int = 96, height: int = 64, frames: int = 4, step: int = 6,
                samples: int = 4) -> dict:
    """Render `demo_scene` in a new empty file to out_dir/frame_####.exr (multilayer); returns what was made.

    Replaces the open file: for scripts and tests only.
    """
    os.makedirs(out_dir, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    demo_scene(scene, width, height, frames, step, samples)
    enable_motion_passes(scene)
    paths = []
    for frame in range(1, frames + 1):
        scene.frame_set(frame)
        bpy.ops.render.render(scene=scene.name)
        paths.append(save_motion_exr(scene, os.path.join(out_dir, f"frame_{frame:04d}.exr")))
    # Pixels per frame, in image coordinates (x right, y down): the cube moves up.
    return {"frames": paths, "motion_px": [step, -(step // 2)], "width": width, "height": height}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.demo_scene",
                                     description="Render the temporal-coherence demo animation as multilayer EXRs.")
    parser.add_argument("out_dir")
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--step", type=int, default=6, help="pixels the cube moves right per frame (half as many up)")
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args(argv)
    print(json.dumps(render_demo(args.out_dir, args.width, args.height, args.frames, args.step, args.samples)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
