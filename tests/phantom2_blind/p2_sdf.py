"""Signed-distance primitives, rotations and voxel-grid helpers (float32 numpy).

Coordinates: every primitive is written in the local frame of its parent
(vertebra frame u=patient left, v=posterior, w=superior, or the DICOM LPS
world frame for implants).  A primitive is a callable on a tuple of arrays
(u, v, w) plus an axis-aligned bounding box (lo, hi) in the same frame.
"""
import numpy as np

F32 = np.float32


def rot_x(a):
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a):
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a):
    c, s = np.cos(np.radians(a)), np.sin(np.radians(a))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def pose_matrix(yaw, roll, pitch):
    """yaw about z (axial rotation), roll about y (coronal), pitch about x (sagittal)."""
    return rot_z(yaw) @ rot_y(roll) @ rot_x(pitch)


def smin(a, b, k):
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def ellipse2d(x, y, a, b):
    """Approximate SDF of an ellipse (exact zero set)."""
    k0 = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    k1 = np.sqrt((x / (a * a)) ** 2 + (y / (b * b)) ** 2)
    d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
    return np.where(k0 < 1e-4, -np.minimum(a, b), d)


def _frame(P, c, M):
    c, M = [float(q) for q in c], np.asarray(M, float).tolist()
    x, y, z = P[0] - c[0], P[1] - c[1], P[2] - c[2]
    return (M[0][0] * x + M[1][0] * y + M[2][0] * z,
            M[0][1] * x + M[1][1] * y + M[2][1] * z,
            M[0][2] * x + M[1][2] * y + M[2][2] * z)


class Prim:
    def __init__(self, fn, lo, hi):
        self.fn, self.lo, self.hi = fn, np.asarray(lo, float), np.asarray(hi, float)

    def __call__(self, P):
        return self.fn(P)


def _box_ext(c, M, half):
    ext = np.abs(np.asarray(M)) @ np.asarray(half, float)
    return np.asarray(c, float) - ext, np.asarray(c, float) + ext


def rbox(c, M, half, rad=0.0):
    """Rounded box; columns of M are the box axes in the parent frame."""
    c, M, half = np.asarray(c, float), np.asarray(M, float), np.asarray(half, float)
    hx, hy, hz = (float(q) for q in half - rad)

    def fn(P):
        a, b, d = _frame(P, c, M)
        qx, qy, qz = np.abs(a) - hx, np.abs(b) - hy, np.abs(d) - hz
        out = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
        return out + np.minimum(np.maximum(np.maximum(qx, qy), qz), 0) - rad
    return Prim(fn, *_box_ext(c, M, half))


def capsule(a, b, r):
    a, b = np.asarray(a, float), np.asarray(b, float)
    lo, hi = np.minimum(a, b) - r, np.maximum(a, b) + r
    L2 = float((b - a) @ (b - a))
    ba, a = (b - a).tolist(), a.tolist()

    def fn(P):
        px, py, pz = P[0] - a[0], P[1] - a[1], P[2] - a[2]
        h = np.clip((px * ba[0] + py * ba[1] + pz * ba[2]) / L2, 0, 1)
        return np.sqrt((px - ba[0] * h) ** 2 + (py - ba[1] * h) ** 2 + (pz - ba[2] * h) ** 2) - r
    return Prim(fn, lo, hi)


def ellipsoid(c, M, radii):
    c, M, r = np.asarray(c, float), np.asarray(M, float), np.asarray(radii, float)

    def fn(P):
        x, y, z = _frame(P, c, M)
        r0, r1, r2 = (float(q) for q in r)
        k0 = np.sqrt((x / r0) ** 2 + (y / r1) ** 2 + (z / r2) ** 2)
        k1 = np.sqrt((x / r0 ** 2) ** 2 + (y / r1 ** 2) ** 2 + (z / r2 ** 2) ** 2)
        d = k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)
        return np.where(k0 < 1e-4, -float(r.min()), d)
    return Prim(fn, *_box_ext(c, M, r))


def ellcyl(c, M, A, B, hl, rad=0.0):
    """Capped elliptical cylinder; M columns = (width axis, height axis, long axis)."""
    c, M = np.asarray(c, float), np.asarray(M, float)
    A, B, hl = float(A), float(B), float(hl)

    def fn(P):
        x, y, z = _frame(P, c, M)
        d2 = ellipse2d(x, y, A, B) + rad
        dz = np.abs(z) - (hl - rad)
        return (np.minimum(np.maximum(d2, dz), 0)
                + np.sqrt(np.maximum(d2, 0) ** 2 + np.maximum(dz, 0) ** 2) - rad)
    return Prim(fn, *_box_ext(c, M, [A, B, hl]))


def custom(fn, lo, hi):
    return Prim(fn, lo, hi)


def aabb_world(lo, hi, R, t):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    wc = corners @ np.asarray(R).T + np.asarray(t)
    return wc.min(0), wc.max(0)


class Grid:
    """Voxel grid in LPS: x (columns) = x0 + i*ps, y (rows) = y0 + j*ps, z = z0 + k*dz."""

    def __init__(self, x0, y0, z0, ps, dz, nx, ny, nz):
        self.x0, self.y0, self.z0, self.ps, self.dz = x0, y0, z0, ps, dz
        self.nx, self.ny, self.nz = nx, ny, nz

    def box(self, lo, hi, margin=0.0):
        """World AABB -> index box ((k0,k1),(j0,j1),(i0,i1)) or None when outside."""
        r = []
        for o, s, n, a, b in ((self.z0, self.dz, self.nz, lo[2], hi[2]),
                              (self.y0, self.ps, self.ny, lo[1], hi[1]),
                              (self.x0, self.ps, self.nx, lo[0], hi[0])):
            i0 = max(0, int(np.floor((a - margin - o) / s)))
            i1 = min(n, int(np.ceil((b + margin - o) / s)) + 1)
            if i1 <= i0:
                return None
            r.append((i0, i1))
        return tuple(r)

    def coords(self, box):
        (k0, k1), (j0, j1), (i0, i1) = box
        X = (self.x0 + np.arange(i0, i1) * self.ps).astype(F32)[None, None, :]
        Y = (self.y0 + np.arange(j0, j1) * self.ps).astype(F32)[None, :, None]
        Z = (self.z0 + np.arange(k0, k1) * self.dz).astype(F32)[:, None, None]
        return X, Y, Z


def to_local(X, Y, Z, R, t):
    R = np.asarray(R, float)
    dx, dy, dz = X - F32(t[0]), Y - F32(t[1]), Z - F32(t[2])
    return tuple((F32(R[0, i]) * dx + F32(R[1, i]) * dy + F32(R[2, i]) * dz) for i in range(3))


def intersect(box, outer):
    """Intersect index box with outer box; return (global box, slices relative to outer)."""
    g, rel = [], []
    for (a0, a1), (b0, b1) in zip(box, outer):
        lo, hi = max(a0, b0), min(a1, b1)
        if hi <= lo:
            return None, None
        g.append((lo, hi))
        rel.append(slice(lo - b0, hi - b0))
    return tuple(g), tuple(rel)


def eval_ops(P, ops):
    """Evaluate an op list on point arrays: ('min', prim, k) | ('carve', prim) | ('max', prim)."""
    acc = None
    for op in ops:
        d = op[1](P)
        if acc is None:
            acc = d if op[0] == 'min' else -d
        elif op[0] == 'min':
            acc = smin(acc, d, op[2])
        elif op[0] == 'carve':
            acc = np.maximum(acc, -d)
        else:
            acc = np.maximum(acc, d)
    return acc


def eval_ops_grid(grid, R, t, ops, margin=4.0, far=50.0):
    """Evaluate an op list on the voxel grid, each primitive only inside its own box.

    Returns (index box, sdf array) or (None, None) when outside the grid."""
    wb = [aabb_world(op[1].lo, op[1].hi, R, t) for op in ops]
    lo = np.min([b[0] for b in wb if True], axis=0)
    hi = np.max([b[1] for b in wb], axis=0)
    outer = grid.box(lo, hi, margin)
    if outer is None:
        return None, None
    shape = tuple(b - a for a, b in outer)
    acc = np.full(shape, far, F32)
    for op, (plo, phi) in zip(ops, wb):
        m = margin + (op[2] if op[0] == 'min' else 0.0)
        if op[0] == 'max':   # intersection must be evaluated everywhere
            plo, phi = lo, hi
        g, rel = intersect(grid.box(plo, phi, m) or ((0, 0),) * 3, outer)
        if g is None:
            if op[0] == 'max':
                acc[...] = far
            continue
        P = to_local(*grid.coords(g), R, t)
        d = op[1](P).astype(F32)
        if op[0] == 'min':
            acc[rel] = smin(acc[rel], d, op[2])
        elif op[0] == 'carve':
            acc[rel] = np.maximum(acc[rel], -d)
        else:
            acc[rel] = np.maximum(acc[rel], d)
    return outer, acc
