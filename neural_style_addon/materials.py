"""Putting a result image on the active object's material as its Base Color texture.

The texture goes through a Mix node ("Neural Style Mix", factor 1) whose other
input keeps whatever fed Base Color before, so the original look is one slider
away (factor 0) and `remove_texture` puts the material back as it was.  A
stylized *render* is mapped the way the camera saw it: the object gets a UV
map projected from the scene's camera ("Neural Style Camera"), so each pixel
lands on the surface it was rendered from; other images use the object's own UVs.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view

from .errors import StyleError

NODE_NAME = "Neural Style Texture"
MIX_NAME = "Neural Style Mix"
UV_NODE_NAME = "Neural Style Projection"
CAMERA_UV = "Neural Style Camera"


def check_texture_target(obj: bpy.types.Object | None, scene: bpy.types.Scene | None = None) -> None:
    """Fail before any work when the result could not be placed (`scene`: it is projected from its camera)."""
    if obj is None:
        raise StyleError("texture output needs an active object: select a mesh first")
    if not hasattr(obj.data, "materials"):
        raise StyleError(f"the active object '{obj.name}' ({obj.type.lower()}) cannot have materials")
    if scene is not None and scene.camera is None:
        raise StyleError(f"the scene '{scene.name}' has no camera to project the render from")


def _socket(sockets, identifier: str):
    return next(socket for socket in sockets if socket.identifier == identifier)


def _material(obj: bpy.types.Object) -> bpy.types.Material:
    material = obj.active_material
    if material is None:
        material = bpy.data.materials.new(f"{obj.name} Style")
        obj.data.materials.append(material)
        obj.active_material_index = len(obj.data.materials) - 1
    if not material.node_tree:
        material.use_nodes = True  # materials made by older files; Blender 5 always has a node tree
    return material


def _principled(tree: bpy.types.NodeTree) -> bpy.types.Node:
    bsdf = next((node for node in tree.nodes if node.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        output = next((node for node in tree.nodes if node.type == "OUTPUT_MATERIAL"), None)
        output = output or tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return bsdf


def _mix(tree: bpy.types.NodeTree, bsdf: bpy.types.Node) -> bpy.types.Node:
    """The Mix node between the original Base Color (input A) and the texture (input B), made once."""
    mix = tree.nodes.get(MIX_NAME)
    if mix is not None:
        return mix
    base = bsdf.inputs["Base Color"]
    mix = tree.nodes.new("ShaderNodeMix")
    mix.name = mix.label = MIX_NAME
    mix.data_type, mix.blend_type = "RGBA", "MIX"
    mix.location = (bsdf.location.x - 220, bsdf.location.y)
    _socket(mix.inputs, "Factor_Float").default_value = 1.0
    original = _socket(mix.inputs, "A_Color")
    if base.links:
        tree.links.new(base.links[0].from_socket, original)
    else:
        original.default_value = base.default_value
    tree.links.new(_socket(mix.outputs, "Result_Color"), base)
    return mix


def project_from_camera(obj: bpy.types.Object, scene: bpy.types.Scene) -> str:
    """Give `obj` a UV map holding where each vertex appears in `scene`'s camera frame; returns its name."""
    mesh = obj.data
    layer = mesh.uv_layers.get(CAMERA_UV) or mesh.uv_layers.new(name=CAMERA_UV)
    matrix = obj.matrix_world
    frame = np.array([world_to_camera_view(scene, scene.camera, matrix @ vertex.co).xy for vertex in mesh.vertices],
                     dtype=np.float32).reshape(-1, 2)
    vertex_of_loop = np.empty(len(mesh.loops), dtype=np.int32)
    mesh.loops.foreach_get("vertex_index", vertex_of_loop)
    layer.data.foreach_set("uv", frame[vertex_of_loop].ravel())
    return layer.name


def _map(tree: bpy.types.NodeTree, node: bpy.types.Node, obj: bpy.types.Object, scene) -> None:
    """Wire the texture's coordinates: the camera projection for a render, else the object's UVs."""
    vector = node.inputs["Vector"]
    for link in list(vector.links):
        tree.links.remove(link)
    old = tree.nodes.get(UV_NODE_NAME)
    if old is not None:
        tree.nodes.remove(old)
    if scene is None:
        node.extension = "REPEAT"
        return
    node.extension = "EXTEND"  # the edges of the frame, not a repeat of it
    if obj.type == "MESH":
        coords = tree.nodes.new("ShaderNodeUVMap")
        coords.uv_map = project_from_camera(obj, scene)
        output = coords.outputs["UV"]
    else:  # curves, text...: no UV map to write; the camera frame of the render itself
        coords = tree.nodes.new("ShaderNodeTexCoord")
        output = coords.outputs["Window"]
    coords.name = coords.label = UV_NODE_NAME
    coords.location = (node.location.x - 220, node.location.y)
    tree.links.new(output, vector)


def assign_texture(obj: bpy.types.Object, image: bpy.types.Image,
                   scene: bpy.types.Scene | None = None) -> bpy.types.ShaderNodeTexImage:
    """Show `image` as the Base Color of `obj`'s active material.

    With `scene`, the image is a render of it and is projected from its camera.
    Reuses the nodes this add-on made before (by name), so running again swaps
    the image instead of piling up nodes; creates a material with a Principled
    BSDF when the object has none.
    """
    check_texture_target(obj, scene)
    tree = _material(obj).node_tree
    bsdf = _principled(tree)
    mix = _mix(tree, bsdf)
    node = tree.nodes.get(NODE_NAME)
    if node is None:
        node = tree.nodes.new("ShaderNodeTexImage")
        node.name = node.label = NODE_NAME
        node.location = (mix.location.x - 320, mix.location.y - 200)
    node.image = image
    tree.links.new(node.outputs["Color"], _socket(mix.inputs, "B_Color"))
    _map(tree, node, obj, scene)
    tree.nodes.active = node
    return node


def remove_texture(obj: bpy.types.Object) -> None:
    """Undo `assign_texture` on `obj`'s active material: the original Base Color input comes back."""
    material = obj.active_material
    tree = material.node_tree if material else None
    if tree is None:
        return
    mix = tree.nodes.get(MIX_NAME)
    if mix is not None:
        original = _socket(mix.inputs, "A_Color")
        for link in list(_socket(mix.outputs, "Result_Color").links):
            target = link.to_socket
            if original.links:
                tree.links.new(original.links[0].from_socket, target)
            else:
                tree.links.remove(link)
                target.default_value = original.default_value
        tree.nodes.remove(mix)
    for name in (NODE_NAME, UV_NODE_NAME):
        if name in tree.nodes:
            tree.nodes.remove(tree.nodes[name])
    if obj.type == "MESH" and CAMERA_UV in obj.data.uv_layers:
        obj.data.uv_layers.remove(obj.data.uv_layers[CAMERA_UV])
