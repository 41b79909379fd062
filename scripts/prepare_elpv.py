#!/usr/bin/env python3
"""Lay out the ELPV solar-cell images (PyPI package elpv-dataset) as anodet categories.

elpv-dataset ships 2,624 real 300x300 electroluminescence images of solar cells, each with a
defect probability assessed by experts (0, 1/3, 2/3 or 1) and the cell type (mono or poly).
anodet's simple layout gets one category per cell type:

    <out>/elpv-mono/good/   probability 0    (functional)
    <out>/elpv-mono/bad/    probability 1    (defective)
    (and the same for elpv-poly)

Cells rated 1/3 or 2/3 are left out: the experts were unsure, so they are neither a clean good
training example nor a certain defect, and would blur both the fit and the evaluation.
Licence of the images: CC BY-NC-SA 4.0 (Buerhop-Lutz et al., Deitsch et al.).
"""
import argparse
import csv
import os
import shutil
import tempfile

import elpv_dataset


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data")
    args = parser.parse_args()
    source = os.path.join(os.path.dirname(elpv_dataset.__file__), "data")
    rows = []
    with open(os.path.join(source, "labels.csv")) as handle:
        for line in handle:
            fields = line.split()
            if len(fields) == 3:
                rows.append((fields[0], float(fields[1]), fields[2]))
    counts = {}
    for cell_type in sorted({row[2] for row in rows}):
        category = f"elpv-{cell_type}"
        final = os.path.join(args.out, category)
        os.makedirs(args.out, exist_ok=True)
        staging = tempfile.mkdtemp(dir=args.out, prefix=f".{category}.")
        for relative, probability, kind in rows:
            if kind != cell_type or probability not in (0.0, 1.0):
                continue
            label = "good" if probability == 0.0 else "bad"
            os.makedirs(os.path.join(staging, label), exist_ok=True)
            shutil.copyfile(os.path.join(source, relative), os.path.join(staging, label, os.path.basename(relative)))
            counts[(category, label)] = counts.get((category, label), 0) + 1
        with open(os.path.join(staging, "SOURCE.txt"), "w") as note:
            note.write("ELPV dataset via PyPI elpv-dataset; CC BY-NC-SA 4.0. Probability 0 -> good, 1 -> bad; "
                       "1/3 and 2/3 left out.\n")
        open(os.path.join(staging, ".complete"), "w").close()
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(staging, final)
    for (category, label), count in sorted(counts.items()):
        print(f"{category}/{label}: {count} images")


if __name__ == "__main__":
    main()
