"""timing / memory benchmark: write_study for the first N full studies and N small studies."""
import os, resource, shutil, sys, time, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spine_phantom4 as sp
n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
out = "/tmp/p4_bench"
rows = []
for small in (False, True):
    for p in sp.family(20261201, n, small=small):
        t = time.time()
        sp.write_study(p, out)
        dt = time.time() - t
        rows.append(dict(index=p["index"], small=small, slices=p["acq"]["n_slices"], pixel=round(p["acq"]["pixel_mm"], 3),
                         thk=p["acq"]["thickness_mm"], screws=len(p["screws"]), seconds=round(dt, 1)))
        print(rows[-1], flush=True)
        shutil.rmtree(out)
print("max rss parent MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "children MB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
