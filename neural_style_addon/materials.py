"""Putting a result image on the active object's material as its Base Color texture."""

from __future__ import annotations

import bpy

from .errors import StyleError

NODE_NAME = "Neural Style Texture"


def check_texture_target(obj: bpy.types.Object | None) -> None:
    """Fail before any work when the result could not be placed."""
    if obj is None:
        raise StyleError("texture output needs an active object: select a mesh first")
    if not hasattr(obj.data, "materials"):
        raise StyleError(f"the active object '{obj.name}' ({obj.type.lower()}) cannot have materials")


def assign_texture(obj: bpy.types.Object, image: bpy.types.Image) -> bpy.types.ShaderNodeTexImage:
    """Show `image` as the Base Color of `obj`'s active material.

    Reuses the node this add-on made before (by name), so running again
    swaps the image instead of piling up nodes; creates a material with a
    Principled BSDF when the object has none.
    """
    check_texture_target(obj)
    material = obj.active_material
    if material is None:
        material = bpy.data.materials.new(f"{obj.name} Style")
        obj.data.materials.append(material)
        obj.active_material_index = len(obj.data.materials) - 1
    if not material.node_tree:
        material.use_nodes = True  # materials made by older files; Blender 5 always has a node tree
    tree = material.node_tree
    bsdf = next((node for node in tree.nodes if node.type == "BSDF_PRINCIPLED"), None)
    if bsdf is None:
        bsdf = tree.nodes.new("ShaderNodeBsdfPrincipled")
        output = next((node for node in tree.nodes if node.type == "OUTPUT_MATERIAL"), None)
        output = output or tree.nodes.new("ShaderNodeOutputMaterial")
        tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    node = tree.nodes.get(NODE_NAME)
    if node is None:
        node = tree.nodes.new("ShaderNodeTexImage")
        node.name = node.label = NODE_NAME
        node.location = (bsdf.location.x - 320, bsdf.location.y)
    node.image = image
    tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    tree.nodes.active = node
    return node
