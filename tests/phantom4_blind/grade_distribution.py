"""grade distribution of family(20261201, 200) via compute_truth -> grade_distribution.json"""
import collections, json, os, sys, time
from multiprocessing import Pool
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import spine_phantom4 as sp


def one(p):
    t = time.time()
    tr = sp.compute_truth(p)
    return tr, time.time() - t


if __name__ == "__main__":
    nproc = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    fam = sp.family(20261201, 200)
    with Pool(nproc) as pool:
        res = pool.map(one, fam)
    g = collections.Counter(); gd = collections.Counter(); dirs = collections.Counter()
    n = 0; tic = 0; wide = 0; lam = 0; cem = 0
    for tr, _ in res:
        for s in tr["screws"]:
            n += 1
            g[s["grade"]] += 1
            gd[f"{s['grade']}-{s['breach_direction']}"] += 1
            tic += s["tip_in_canal"]; wide += s["screw_wider_than_pedicle"]; lam += s["at_laminectomy_level"]; cem += s["cement_augmented"]
    studies = dict(n=len(fam), laminectomy=sum(bool(p["laminectomy_levels"]) for p in fam),
                   unilateral=sum(p["unilateral"] for p in fam),
                   single_level=sum(len(p["instrumented_levels"]) == 2 for p in fam),
                   s1_screws=sum(any(s["level"] == "S1" for s in p["screws"]) for p in fam),
                   hip=sum(p["hardware"]["hip"] is not None for p in fam), scs=sum(p["hardware"]["scs"] is not None for p in fam),
                   cages=sum(bool(p["hardware"]["cages"]) for p in fam), crosslink=sum(bool(p["hardware"]["crosslinks"]) for p in fam),
                   cement=sum(bool(p["cement_levels"]) for p in fam), sat12=sum(p["acq"]["sat12"] for p in fam),
                   scoliosis=sum(p["posture"]["scoliosis_deg"] != 0 for p in fam), stenosis=sum(p["posture"]["stenosis"] for p in fam),
                   trefoil=sum(p["posture"]["canal_type"] == "trefoil" for p in fam))
    out = dict(screws=n, grades=dict(sorted(g.items())), grade_direction=dict(sorted(gd.items())),
               medial_DE_fraction=round((gd["D-medial"] + gd["E-medial"]) / n, 3),
               tip_in_canal=tic, wider_than_pedicle=wide, at_laminectomy_level=lam, cement_augmented=cem,
               studies=studies, mean_truth_seconds=round(sum(t for _, t in res) / len(res), 2))
    json.dump(out, open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "grade_distribution.json"), "w"), indent=1)
    print(json.dumps(out, indent=1))
