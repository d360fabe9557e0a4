"""A third party's scan, written from docs/stream-protocol.md and docs/data-format.md alone.

Nothing of Talbot's stream or scan-file code is imported here: the messages are plain JSON sent
with pyzmq, the file is written with plain h5py, and Talbot is run as the commands the docs name
(``talbot recon``, ``talbot reconstruct``). The scan is of a uniform cylinder, rendered with the
stepping curve and sign convention of stream-protocol.md §2.2, and its reconstructed δ is checked
against the analytic value.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import jsonschema
import numpy as np
import pytest
import zmq

SCHEMAS = Path(__file__).parents[2] / "docs" / "schema"

# --- the instrument and plan, as stream-protocol.md §2.1 lists them -------------------------
ENERGY_KEV = 12.4
WAVELENGTH_M = 12.398419843320026e-10 / ENERGY_KEV
P1, P2, ORDER, PIXEL_M, MAGNIFICATION = 2.0e-6, 1.0e-6, 3, 0.5e-6, 3.0
DISTANCE_M = ORDER * P1**2 / (2**2 * 2 * WAVELENGTH_M)  # pi grating: nu = 2
SHEAR_M = WAVELENGTH_M * DISTANCE_M / (P2 * MAGNIFICATION)  # object space, 0.5 um
ROWS, COLS = 8, 96
STEPS, ANGLES, REFERENCE_EVERY, DARKS = 5, 90, 45, 2
INSTRUMENT = {
    "name": "third-party",
    "geometry": {
        "energy_kev": ENERGY_KEV,
        "g1_pitch_m": P1,
        "g1_phase_deg": 180.0,
        "g2_pitch_m": P2,
        "talbot_order": ORDER,
        "pixel_size_m": PIXEL_M,
        "magnification": MAGNIFICATION,
    },
    "detector": {"shape": [ROWS, COLS]},
}
PLAN = {
    "steps": STEPS,
    "angles": ANGLES,
    "reference_every": REFERENCE_EVERY,
    "darks": DARKS,
    "exposure_s": 0.1,
}

# --- the sample: a uniform cylinder on the rotation axis ------------------------------------
RADIUS_M = 15e-6
DELTA, BETA = 1.0e-6, 2.0e-9  # a weakly absorbing plastic at 12.4 keV
I0, VISIBILITY, DARK_ADU = 20000.0, 0.3, 100.0


def chord_m(s_m: np.ndarray) -> np.ndarray:
    """Path length [m] through the cylinder at column coordinate s [m] (any angle)."""
    return 2.0 * np.sqrt(np.clip(RADIUS_M**2 - s_m**2, 0.0, None))


def series_order() -> list[tuple[str, int]]:
    """The acquisition order of stream-protocol.md §2.1."""
    order = [("reference", 0)]
    for i in range(ANGLES):
        order.append(("projection", i))
        if (i + 1) % REFERENCE_EVERY == 0:
            order.append(("reference", len([o for o in order if o[0] == "reference"])))
    if order[-1][0] != "reference":
        order.append(("reference", len([o for o in order if o[0] == "reference"])))
    return order


def render(sample_in: bool, theta: float, beta: float = BETA) -> np.ndarray:
    """One frame (rows, columns) [ADU]: I = I0 T [1 + V cos(θ + φ_ref + φ)], pixel-averaged over
    8 sub-samples, T = exp(−2k ∫β dz), φ = k [∫δ(s + ξ/2) − ∫δ(s − ξ/2)] (stream-protocol.md
    §2.2)."""
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    cols = np.arange(COLS)[:, None] + sub[None, :]
    s = (cols - (COLS - 1) / 2) * PIXEL_M  # the axis on the detector centre
    phi_ref = 2 * math.pi * 2.0 * (cols / COLS) + 0.3  # two moire fringes across the field
    phi, transmission = np.zeros_like(s), np.ones_like(s)
    if sample_in:
        k = 2 * math.pi / WAVELENGTH_M
        phi = k * DELTA * (chord_m(s + SHEAR_M / 2) - chord_m(s - SHEAR_M / 2))
        transmission = np.exp(-2 * k * beta * chord_m(s))
    curve = I0 * transmission * (1 + VISIBILITY * np.cos(theta + phi_ref + phi))
    line = curve.mean(axis=1) + DARK_ADU
    return np.repeat(np.rint(line)[None, :], ROWS, axis=0).astype("<u2")


def scan(beta: float = BETA) -> list[tuple[dict[str, object], np.ndarray]]:
    """(tags, frame) of every frame in acquisition order, tags as §2.2 names them."""
    out: list[tuple[dict[str, object], np.ndarray]] = []
    dark = np.full((ROWS, COLS), DARK_ADU, "<u2")
    for _ in range(DARKS):
        out.append(
            ({"image_key": 2, "angle_index": -1, "series_index": -1, "step_index": -1}, dark)
        )
    for kind, index in series_order():
        angle = index * 180.0 / ANGLES if kind == "projection" else 0.0
        for k in range(STEPS):
            x = 10e-6 + k * P2 / STEPS  # the measured grating position [m]
            tags = {
                "image_key": 0 if kind == "projection" else 1,
                "angle_index": index if kind == "projection" else -1,
                "series_index": index if kind == "reference" else -1,
                "step_index": k,
                "g2_position_m": x,
                "rotation_deg": angle,
            }
            out.append((tags, render(kind == "projection", 2 * math.pi * x / P2, beta)))
    for n, (tags, _) in enumerate(out):
        tags.setdefault("g2_position_m", 0.0)
        tags.setdefault("rotation_deg", 0.0)
        tags.update(attempt=0, timestamp_s=0.12 * n, ring_current_ma=0.0)  # no beam monitor
    return out


def valid_by_schema(name: str, message: dict[str, object]) -> None:
    """Validate a message with the published JSON Schema (docs/schema/), as a third party would."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(message)


def talbot(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "beamline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def cylinder_delta(recon_h5: Path) -> tuple[float, float]:
    """Mean δ inside 0.7 R and in air between 1.2 R and 1.5 R (inside the field of view's
    inscribed circle of 1.6 R), from recon.h5 (axes z, y, x)."""
    with h5py.File(recon_h5) as f:
        delta = f["delta"][()]
        voxel = float(f["delta"].attrs["voxel_size_m"])
    n = delta.shape[-1]
    y, x = np.indices((n, n)) - (n - 1) / 2
    r = np.hypot(x, y) * voxel
    air = (r > 1.2 * RADIUS_M) & (r < 1.5 * RADIUS_M)
    return float(delta[:, r < 0.7 * RADIUS_M].mean()), float(delta[:, air].mean())


@pytest.fixture(scope="module")
def frames() -> list[tuple[dict[str, object], np.ndarray]]:
    return scan()


def test_a_stream_written_from_the_protocol_document_reconstructs_the_cylinder(
    frames: list[tuple[dict[str, object], np.ndarray]], tmp_path: Path
) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.sndhwm = 64
    push.bind("tcp://127.0.0.1:*")
    endpoint = push.getsockopt_string(zmq.LAST_ENDPOINT)
    out = tmp_path / "live"
    recon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beamline.cli",
            "recon",
            "--connect",
            endpoint,
            "--out",
            str(out),
            "--scans",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    envelope = {"protocol": "talbot-stream", "version": 2, "scan_uid": "third-party-0001"}
    try:
        start = {**envelope, "type": "scan-start", "instrument": INSTRUMENT, "plan": PLAN,
                 "dtype": "uint16", "shape": [ROWS, COLS]}  # fmt: skip
        valid_by_schema("scan-start", start)
        push.send_multipart([json.dumps(start).encode(), b""])
        for n, (tags, frame) in enumerate(frames):
            header = {**envelope, "type": "frame", "frame_number": n, **tags,
                      "dtype": "uint16", "shape": [ROWS, COLS]}  # fmt: skip
            if n < 10:
                valid_by_schema("frame", header)
            push.send_multipart([json.dumps(header).encode(), frame.tobytes()])
        end = {**envelope, "type": "scan-end", "frames_sent": len(frames)}
        valid_by_schema("scan-end", end)
        push.send_multipart([json.dumps(end).encode(), b""])
        log, _ = recon.communicate(timeout=240)
    finally:
        recon.kill()
        push.close(linger=0)
        ctx.term()
    assert recon.returncode == 0, log
    assert "frames sent 467, lost 0," in log, log
    inside, outside = cylinder_delta(out / "third-party-0001" / "recon.h5")
    assert inside == pytest.approx(DELTA, rel=0.02), (inside, outside, log)
    assert abs(outside) < 0.02 * DELTA, (inside, outside)


def write_scan_file(frames: list[tuple[dict[str, object], np.ndarray]], path: Path) -> None:
    """The scan as data-format.md lays a file out, with plain h5py."""
    names = ["image_key", "angle_index", "series_index", "step_index", "attempt",
             "g2_position_m", "rotation_deg", "timestamp_s", "ring_current_ma"]  # fmt: skip
    dtypes = {"image_key": "i1", "g2_position_m": "f8", "rotation_deg": "f8",
              "timestamp_s": "f8", "ring_current_ma": "f8"}  # fmt: skip
    with h5py.File(path, "w", libver="latest") as f:
        entry = f.create_group("entry")
        entry.attrs.update(NX_class="NXentry", definition="NXtomo")
        entry.attrs.update(talbot_layout="talbot-scan/2", scan_uid="third-party-0002")
        f.create_dataset(
            "/entry/data/data", data=np.stack([fr for _, fr in frames]), chunks=(1, ROWS, COLS)
        )
        group = f.create_group("/entry/frames")
        group["frame_number"] = np.arange(len(frames), dtype="i8")
        for name in names:
            group[name] = np.array([t[name] for t, _ in frames], dtype=dtypes.get(name, "i4"))
        group["superseded"] = np.zeros(len(frames), "u1")
        inter = f.create_group("/entry/instrument/interferometer")
        valid_by_schema("instrument", INSTRUMENT)
        valid_by_schema("scan-plan", PLAN)
        inter.attrs["instrument_json"] = json.dumps(INSTRUMENT)
        inter.attrs["scan_plan_json"] = json.dumps(PLAN)
        inter.attrs["grid_steps"] = STEPS
        inter.attrs["periods"] = 1
        f["/entry/end/frames_written"] = np.int64(len(frames))
        f["/entry/end/complete"] = np.uint8(1)


def test_a_file_written_from_the_format_document_reconstructs_the_cylinder(
    frames: list[tuple[dict[str, object], np.ndarray]], tmp_path: Path
) -> None:
    path = tmp_path / "third_party_000000.h5"
    write_scan_file(frames, path)
    done = talbot("reconstruct", str(path), "--out", str(tmp_path / "offline"))
    assert done.returncode == 0, done.stdout + done.stderr
    inside, outside = cylinder_delta(tmp_path / "offline" / "recon.h5")
    assert inside == pytest.approx(DELTA, rel=0.02), (inside, outside)
    assert abs(outside) < 0.02 * DELTA, (inside, outside)


def test_a_cylinder_that_only_refracts_reconstructs_too(tmp_path: Path) -> None:
    """No absorption at all: the rotation axis comes from the phase (-ln T is zero)."""
    path = tmp_path / "phase_only_000000.h5"
    write_scan_file(scan(beta=0.0), path)
    done = talbot("reconstruct", str(path), "--out", str(tmp_path / "offline"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "centre +0.00 px" in done.stdout or "centre -0.00 px" in done.stdout, done.stdout
    inside, outside = cylinder_delta(tmp_path / "offline" / "recon.h5")
    assert inside == pytest.approx(DELTA, rel=0.02), (inside, outside)
    assert abs(outside) < 0.02 * DELTA, (inside, outside)
