"""A procedural stand-in for the MVCNN 12-view ModelNet40 renders (docs/DATA.md), written in exactly their layout.

ModelNet40 cannot be downloaded here, so ``make_modelnet_standin`` builds objects from trimesh primitives, renders
each with a small NumPy z-buffer renderer from the same camera ring as the real renders (elevation 30 degrees,
azimuth 0, 30, ..., 330 for v001 .. v012; shaded gray on black) and writes
``<root>/<class>/<train|test>/<class>_<NNNN>.obj.shaded_v001.png .. _v012.png`` plus STANDIN.json, so the real
loader (data/modelnet.py) reads it unchanged. The two modalities the loader reads by default are v001 (azimuth 0,
the objects' front, "view0") and v007 (azimuth 180, their rear, "view6").

Classes come in pairs (classes 2j and 2j + 1) that share one body shape (pair j: body ``j % 10``, proportions
``j // 10``) and differ only by one small feature that the twin (the "plain" class) lacks:
- a *front pair* (even j) differs by a feature low on the body's front (a knob, plate or disc: ``FEATURES[j % 3]``).
  It faces the azimuth-0 camera and the body hides it from azimuth 180: for the same per-object variation
  (``object_params``) the two classes render pixel-identical rear views;
- a *rear pair* (odd j) differs by a smaller feature (``REAR_FEATURE_SCALE`` of the front size) low on the
  body's rear, hidden from azimuth 0: for the same variation the two classes render pixel-identical front views.
Every generated object is checked against its plain twin (same variation) on the view that must not show its
feature; a variation that would show it is re-drawn (``_object_views``).
Both classes of a pair draw their variation from the same distribution (up to such re-draws), so the body
identifies the pair in every view, the front view separates the classes of the front pairs only and the rear
view those of the rear pairs only: with 10 classes (3 front pairs, 2 rear pairs) the front view alone can reach
at most 80% accuracy (8 of 10 classes told apart, a coin flip within each rear pair), the rear view alone 70%,
and both views together 100%.
The front cue is the larger one and serves more classes, so the front view is learned faster: the imbalance the
paper studies (Wu et al., ICML 2022). ``--classes 2`` gives a single front pair.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from .modelnet import NUM_VIEWS, STANDIN_MARKER, view_filename
from .optional import optional_module

trimesh = optional_module("trimesh")  # imported on first use: greedymm[mesh]

ELEVATION_DEG = 30.0
AZIMUTHS_DEG = tuple(30.0 * v for v in range(NUM_VIEWS))  # v001 .. v012
CAMERA_DISTANCE = 4.0
HALF_EXTENT = 1.2  # half the image side, in world units, at the camera's target (the object's center)
LIGHT = np.array([0.3, 0.5, 1.0])  # in camera coordinates (right, up, toward the camera): a headlight, up-right
AMBIENT, DIFFUSE = 0.15, 0.85


# ---------------------------------------------------------------------------------------------- renderer


def _camera(azimuth_deg: float, elevation_deg: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Camera position (3,) and rotation rows (right, up, forward) (3, 3); z is up, azimuth 0 looks along +y."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    # azimuth 0 sits on the -y side (the objects' front), azimuth 180 on the +y side (their rear)
    toward_cam = np.array([math.sin(az) * math.cos(el), -math.cos(az) * math.cos(el), math.sin(el)])
    forward = -toward_cam
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return distance * toward_cam, np.stack([right, up, forward])


def render(vertices: np.ndarray, faces: np.ndarray, azimuth_deg: float, size: int) -> np.ndarray:
    """Render a closed, outward-wound mesh to a (size, size) uint8 image: flat Lambert shading, black background.

    Perspective camera on the ring (elevation ELEVATION_DEG, looking at the origin); a depth buffer of 1/z
    (interpolated linearly in screen space, which is exact for planar triangles) resolves occlusion.
    """
    pos, rot = _camera(azimuth_deg, ELEVATION_DEG, CAMERA_DISTANCE)
    cam = (vertices - pos) @ rot.T  # (V, 3): right, up, depth
    focal = CAMERA_DISTANCE / HALF_EXTENT
    sx = (cam[:, 0] / cam[:, 2] * focal + 1.0) * size / 2  # pixel coordinates, x to the right
    sy = (1.0 - cam[:, 1] / cam[:, 2] * focal) * size / 2  # y down
    tri = cam[faces]  # (F, 3, 3)
    # normals from world coordinates: (right, up, forward) is a left-handed frame, where a cross product of
    # camera-space edges would point inward; the rotation itself keeps dot products, so normals may be rotated
    world = vertices[faces]
    normals = np.cross(world[:, 1] - world[:, 0], world[:, 2] - world[:, 0]) @ rot.T
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    # back-face culling: a face whose normal points away from the camera is hidden on a closed mesh
    visible = np.einsum("fi,fi->f", normals, tri.mean(axis=1)) < 0
    light = LIGHT / np.linalg.norm(LIGHT)
    # camera looks along +depth, so "toward the camera" is -depth
    shade = AMBIENT + DIFFUSE * np.clip(normals @ (light * [1, 1, -1]), 0, 1)
    gray = np.round(255 * shade).astype(np.uint8)

    image = np.zeros((size, size), np.uint8)
    inv_depth = np.zeros((size, size))  # 0 = nothing drawn (infinitely far)
    xs, ys, iz = sx[faces], sy[faces], 1.0 / cam[faces][:, :, 2]
    for f in np.flatnonzero(visible):
        x, y = xs[f], ys[f]
        x0, x1 = max(int(np.floor(x.min() - 0.5)), 0), min(int(np.ceil(x.max() - 0.5)), size - 1)
        y0, y1 = max(int(np.floor(y.min() - 0.5)), 0), min(int(np.ceil(y.max() - 0.5)), size - 1)
        if x0 > x1 or y0 > y1:
            continue
        area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
        if abs(area) < 1e-12:
            continue
        px = np.arange(x0, x1 + 1)[None, :] + 0.5  # pixel centers
        py = np.arange(y0, y1 + 1)[:, None] + 0.5
        w0 = ((x[1] - px) * (y[2] - py) - (x[2] - px) * (y[1] - py)) / area
        w1 = ((x[2] - px) * (y[0] - py) - (x[0] - px) * (y[2] - py)) / area
        w2 = 1.0 - w0 - w1
        z = w0 * iz[f, 0] + w1 * iz[f, 1] + w2 * iz[f, 2]
        box = inv_depth[y0 : y1 + 1, x0 : x1 + 1]
        hit = (w0 >= 0) & (w1 >= 0) & (w2 >= 0) & (z > box)
        box[hit] = z[hit]
        image[y0 : y1 + 1, x0 : x1 + 1][hit] = gray[f]
    return image


# ------------------------------------------------------------------------------------------------ shapes


def _box(extent, center) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extent, transform=trimesh.transformations.translation_matrix(center))


def _scaled(mesh: trimesh.Trimesh, scale, center) -> trimesh.Trimesh:
    mesh.apply_scale(scale)
    mesh.apply_translation(center)
    return mesh


def _cylinder(radii, z0: float, z1: float, sections: int = 24) -> trimesh.Trimesh:
    m = trimesh.creation.cylinder(radius=1.0, height=z1 - z0, sections=sections)
    return _scaled(m, (radii[0], radii[1], 1.0), (0, 0, (z0 + z1) / 2))


def _cone(radii, z0: float, z1: float, sections: int = 24) -> trimesh.Trimesh:
    m = trimesh.creation.cone(radius=1.0, height=z1 - z0, sections=sections)  # base at z=0
    return _scaled(m, (radii[0], radii[1], 1.0), (0, 0, z0))


def _ellipsoid(radii, center) -> trimesh.Trimesh:
    return _scaled(trimesh.creation.icosphere(subdivisions=2), radii, center)


def _barrel(w: float, d: float, h: float) -> trimesh.Trimesh:
    # a cylinder lying along x: build it along z with radii (h/2, d/2), then turn z onto x
    m = trimesh.creation.cylinder(radius=1.0, height=w, sections=24)
    m.apply_scale((h / 2, d / 2, 1.0))
    return m.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, (0, 1, 0)))


def _pyramid(w: float, d: float, h: float) -> trimesh.Trimesh:
    # a 4-sided cone has corners on the axes; turn it 45 degrees so a face (not an edge) looks to the front
    m = trimesh.creation.cone(radius=1.0, height=h, sections=4)
    m.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 4, (0, 0, 1)))
    m.apply_scale((w / math.sqrt(2), d / math.sqrt(2), 1.0))
    return m.apply_translation((0, 0, -h / 2))


# Each body fills about w x d x h (x right, y front-to-back, z up), centered on the origin; solid from the
# front so that a feature low on its front is occluded from the rear camera.
BODIES: dict[str, Callable[[float, float, float], list[trimesh.Trimesh]]] = {
    "block": lambda w, d, h: [_box((w, d, h), (0, 0, 0))],
    "column": lambda w, d, h: [_cylinder((w / 2, d / 2), -h / 2, h / 2)],
    "dome": lambda w, d, h: [
        _box((w, d, 0.6 * h), (0, 0, -0.2 * h)),
        _ellipsoid((w / 2.4, d / 2.4, h / 2.5), (0, 0, 0.1 * h)),
    ],
    "spire": lambda w, d, h: [_cylinder((w / 2, d / 2), -h / 2, 0.05 * h), _cone((w / 2, d / 2), 0.05 * h, h / 2)],
    "step": lambda w, d, h: [_box((w, d / 2, 0.5 * h), (0, -d / 4, -h / 4)), _box((w, d / 2, h), (0, d / 4, 0))],
    "barrel": lambda w, d, h: [_barrel(w, d, h)],
    "egg": lambda w, d, h: [_ellipsoid((w / 2, d / 2, h / 2), (0, 0, 0))],
    "tower": lambda w, d, h: [
        _box((w, d, 0.6 * h), (0, 0, -0.2 * h)),
        _box((0.55 * w, 0.55 * d, 0.4 * h), (0, 0, 0.3 * h)),
    ],
    "pyramid": lambda w, d, h: [_pyramid(w, d, h)],
    "capsule": lambda w, d, h: [
        _scaled(trimesh.creation.capsule(height=1.0, radius=0.5, count=(12, 12)), (w, d, h / 2), (0, 0, 0))
    ],
}
FEATURES = ("knob", "plate", "disc")  # pair j carries FEATURES[j % 3] (its twin is "plain")
SIDES = ("front", "rear")  # pair j's feature sits on SIDES[j % 2] of the body
REAR_FEATURE_SCALE = 0.8  # the rear cue is smaller, so subtler, than the front one
ASPECTS = (("", (1.0, 1.0, 1.0)), ("wide", (1.25, 1.0, 0.75)), ("tall", (0.8, 0.9, 1.25)), ("squat", (1.15, 1.15, 0.8)))
BASE_EXTENT = (1.1, 0.9, 1.1)
MAX_CLASSES = 2 * len(BODIES) * len(ASPECTS)


def class_names(classes: int) -> list[str]:
    """Class folder names, alphabetical in class order: ``standin_NN_<body>[_<aspect>]_<side>-<feature>`` for the
    first class of a pair and ``standin_NN_<body>[_<aspect>]_plain`` for its twin; pairs run over bodies, then
    aspects, alternating front and rear (see the module docstring)."""
    if not 2 <= classes <= MAX_CLASSES:
        raise ValueError(f"classes must be in [2, {MAX_CLASSES}], got {classes}")
    names = []
    for i in range(classes):
        pair = i // 2
        body = list(BODIES)[pair % len(BODIES)]
        aspect = ASPECTS[pair // len(BODIES)][0]
        feature = f"{SIDES[pair % 2]}-{FEATURES[pair % len(FEATURES)]}" if i % 2 == 0 else "plain"
        names.append(f"standin_{i:02d}_{body}{'_' + aspect if aspect else ''}_{feature}")
    return names


def parse_class(name: str) -> tuple[str, str, str | None, str | None]:
    """(body, aspect, side, feature) of a class_names() entry; side and feature are None for a plain class."""
    parts = name.split("_")[2:]  # standin, NN, body, [aspect], feature
    body, aspect, last = parts[0], parts[1] if len(parts) == 3 else "", parts[-1]
    if body not in BODIES or aspect not in dict(ASPECTS):
        raise ValueError(f"not a stand-in class name: {name!r}")
    if last == "plain":
        return body, aspect, None, None
    side, _, feature = last.partition("-")
    if side not in SIDES or feature not in FEATURES:
        raise ValueError(f"not a stand-in class name: {name!r}")
    return body, aspect, side, feature


def object_params(rng: np.random.Generator) -> dict[str, float]:
    """The per-object variation: overall scale, proportions, yaw, and where the feature sits."""
    return {
        "scale": rng.uniform(0.85, 1.05),
        "w": rng.uniform(0.85, 1.15),
        "d": rng.uniform(0.85, 1.15),
        "h": rng.uniform(0.85, 1.15),
        "yaw_deg": rng.uniform(-20.0, 20.0),
        "feature_x": rng.uniform(-0.12, 0.12),  # fraction of the body width
        "feature_z": rng.uniform(0.2, 0.32),  # height above the bottom, fraction of the body height
        "feature_size": rng.uniform(0.85, 1.15),
    }


def _surface_y(mesh: trimesh.Trimesh, x: float, z: float, side: str) -> float:
    """y where a ray along y from the ``side`` ("front": -y, "rear": +y) at (x, z) first meets ``mesh``.

    Moller-Trumbore, all faces at once."""
    sign = -1.0 if side == "front" else 1.0
    v = mesh.vertices[mesh.faces]  # (F, 3, 3)
    e1, e2 = v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]
    direction = np.array([0.0, -sign, 0.0])
    p = np.cross(direction, e2)
    det = np.einsum("fi,fi->f", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = np.array([x, 100.0 * sign, z]) - v[:, 0]
    u = np.einsum("fi,fi->f", s, p) * inv
    q = np.cross(s, e1)
    w = (q @ direction) * inv
    t = np.einsum("fi,fi->f", e2, q) * inv
    hit = ok & (u >= 0) & (w >= 0) & (u + w <= 1) & (t > 0)
    if not hit.any():
        raise RuntimeError(f"the {side}-feature ray at x={x:.3f}, z={z:.3f} misses the body")
    return float(100.0 * sign - sign * t[hit].min())


def _feature(kind: str, center: np.ndarray, k: float) -> trimesh.Trimesh:
    if kind == "knob":
        return _ellipsoid((0.13 * k,) * 3, center)
    if kind == "plate":
        return _box((0.36 * k, 0.12, 0.16 * k), center)
    if kind == "disc":  # a short cylinder along y: a round button seen from the front or rear
        m = trimesh.creation.cylinder(radius=0.14 * k, height=0.12, sections=20)
        m.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, (1, 0, 0)))
        m.apply_translation(center)
        return m
    raise ValueError(f"unknown feature {kind!r}")


def build_object(name: str, params: dict[str, float]) -> trimesh.Trimesh:
    """The mesh of one object of class ``name`` (a class_names() entry) with variation ``params``."""
    body, aspect, side, feature = parse_class(name)
    w, d, h = (b * a * params[k] for b, a, k in zip(BASE_EXTENT, dict(ASPECTS)[aspect], "wdh", strict=True))
    meshes = BODIES[body](w, d, h)
    if feature is not None:
        x, z = params["feature_x"] * w, -h / 2 + params["feature_z"] * h
        y = _surface_y(trimesh.util.concatenate(meshes), x, z, side)
        # partly embedded in the body: attached, and shallow enough to hide behind it from the other side;
        # narrow bodies get smaller features, so none overhangs a side edge and shows from the other side
        k = params["feature_size"] * min(1.0, w / BASE_EXTENT[0])
        sign = -1.0 if side == "front" else 1.0
        if side == "rear":
            k *= REAR_FEATURE_SCALE
        meshes.append(_feature(feature, np.array([x, y + 0.03 * sign, z]), k))
    mesh = trimesh.util.concatenate(meshes)
    mesh.apply_transform(trimesh.transformations.rotation_matrix(math.radians(params["yaw_deg"]), (0, 0, 1)))
    mesh.apply_scale(params["scale"])
    return mesh


def render_views(mesh: trimesh.Trimesh, size: int) -> list[np.ndarray]:
    """The 12 ring views v001 .. v012 of ``mesh``, each (size, size) uint8."""
    vertices, faces = np.asarray(mesh.vertices, float), np.asarray(mesh.faces)
    return [render(vertices, faces, az, size) for az in AZIMUTHS_DEG]


def _object_views(name: str, rng: np.random.Generator, size: int, attempts: int = 100) -> list[np.ndarray]:
    """The 12 views of one object of class ``name``, its variation drawn from ``rng``.

    The construction's promise is checked on every object: a feature class's view from the side opposite its
    feature (v007 for a front feature, v001 for a rear one) must equal, pixel for pixel, that view of its plain
    twin with the same variation. A variation that breaks it (none did in our checks at 32-224 px) is re-drawn
    from ``rng``.
    """
    side = parse_class(name)[2]
    for _ in range(attempts):
        params = object_params(rng)
        views = render_views(build_object(name, params), size)
        if side is None:
            return views
        hidden = 6 if side == "front" else 0
        twin = build_object(name.rsplit("_", 1)[0] + "_plain", params)
        if np.array_equal(
            views[hidden], render(np.asarray(twin.vertices, float), twin.faces, AZIMUTHS_DEG[hidden], size)
        ):
            return views
    raise RuntimeError(f"{name}: no variation in {attempts} draws hides the {side} feature from the other side")


# ------------------------------------------------------------------------------------------------- writer


def make_modelnet_standin(
    root: Path,
    classes: int = 10,
    per_class: int = 20,
    test_per_class: int | None = None,
    size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Write the stand-in under ``root`` (replacing an earlier stand-in there) and return ``root``.

    ``test_per_class`` defaults to per_class // 4 (at least 1), close to ModelNet40's 4:1 train:test ratio.
    Deterministic for ``seed``: the same arguments give byte-identical files.
    """
    root = Path(root)
    names = class_names(classes)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    test_per_class = max(1, per_class // 4) if test_per_class is None else test_per_class
    if test_per_class < 1:
        raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got {size}")
    if root.exists() and any(root.iterdir()) and not (root / STANDIN_MARKER).is_file():
        raise FileExistsError(f"{root} exists and is not a stand-in written by greedymm; pick an empty folder")

    root.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".staging", dir=root.parent))
    stage.chmod(0o755)  # mkdtemp makes 0700; the finished set should be readable like any data folder
    jobs = [
        (c, split, i)
        for c in range(classes)
        for split, n in (("train", per_class), ("test", test_per_class))
        for i in range(n)
    ]
    try:
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="modelnet-standin", unit="obj", file=sys.stderr)
        for c, split, i in jobs:
            # one stream per object: any subset regenerates identically, whatever the order
            rng = np.random.default_rng([seed, c, 0 if split == "train" else 1, i])
            views = _object_views(names[c], rng, size)
            folder = stage / names[c] / split
            folder.mkdir(parents=True, exist_ok=True)
            number = i + 1 if split == "train" else per_class + i + 1  # ModelNet numbers test after train
            for v, image in enumerate(views):
                Image.fromarray(image, "L").save(folder / view_filename(f"{names[c]}_{number:04d}", v))
            if bar is not None:
                bar.update()
        if bar is not None:
            bar.close()
        info = {
            "generator": "greedymm.data.modelnet_standin",
            "version": 2,
            "classes": classes,
            "per_class": per_class,
            "test_per_class": test_per_class,
            "size": size,
            "seed": seed,
            "class_names": names,
            "camera": {"elevation_deg": ELEVATION_DEG, "azimuth_deg": list(AZIMUTHS_DEG)},
            "note": "procedural stand-in, NOT ModelNet40: trimesh primitives rendered by a NumPy z-buffer; "
            "paired classes differ only by a feature on the front (even pairs; hidden from the rear view v007) or on "
            "the rear (odd pairs, smaller; hidden from the front view v001): each view alone tells only part of the "
            "classes apart, both together all",
        }
        (stage / STANDIN_MARKER).write_text(json.dumps(info, indent=2) + "\n")
        _swap_in(stage, root)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return root


def _swap_in(stage: Path, root: Path) -> None:
    """Replace ``root`` by ``stage`` with renames, so readers see the old or the new set, never a mix."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
        os.replace(root, old / "set")
    os.replace(stage, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
