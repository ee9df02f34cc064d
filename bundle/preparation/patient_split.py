"""The split of a prepared dataset into training / validation / test with every patient in exactly one split."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from bundle.data.splits import normalised_shares, seeded_shuffle

SPLITS = ("training", "validation", "test")


DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def normalise_fractions(fractions: Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """``{"training": f0, "validation": f1, "test": f2}`` summing to 1, from three non-negative numbers (or a
    mapping by split name) with a positive sum."""
    return normalised_shares(fractions, SPLITS, "fractions")


def patient_split(
    entries: Sequence[Mapping],
    fractions: Sequence[float] | Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_key: str = "patient_id",
    label_key: str = "label",
) -> dict[str, list[dict]]:
    """Split ``entries`` into training / validation / test with every patient in exactly one split.

    Deterministic for a given ``seed`` and independent of the entries' order. Stratified by class as far as
    the groups allow: patients are placed one by one (those holding the rarest classes first, in a seeded
    random order within each class) into the split that is relatively furthest below its target count of the
    patient's classes (each class weighted by its rarity; ties: the split relatively furthest below its
    target of all entries, then training before validation before test). So the first patients of a class
    go one to each split, and with enough patients the splits approach their fractions per class. A split
    with fraction 0 stays empty. Entries without ``group_key`` are their own patient
    (their ``case_id``). Within each split the entries keep their input order.
    """
    shares = normalise_fractions(fractions)
    groups: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        patient = entry.get(group_key)
        patient = str(patient) if patient not in (None, "") else f"case:{entry.get('case_id', index)}"
        groups.setdefault(patient, []).append(index)
    labels = [str(entry.get(label_key, "")) for entry in entries]
    totals = Counter(labels)
    composition = {patient: Counter(labels[i] for i in members) for patient, members in groups.items()}

    def rarity(label: str) -> tuple[int, str]:
        return totals[label], label

    stratum = {patient: min(counts, key=rarity) for patient, counts in composition.items()}
    order: list[str] = []
    for label in sorted(set(stratum.values()), key=rarity):
        members = sorted(patient for patient in groups if stratum[patient] == label)
        order.extend(seeded_shuffle(members, seed, label))

    active = [name for name in SPLITS if shares[name] > 0]
    per_label = {name: Counter() for name in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    assigned: dict[str, str] = {}
    for patient in order:

        def score(name: str, patient: str = patient) -> tuple[float, float, int]:
            class_deficit = sum(
                count / totals[label] * (1 - per_label[name][label] / (shares[name] * totals[label]))
                for label, count in composition[patient].items()
            )
            overall_deficit = 1 - sizes[name] / (shares[name] * len(entries))
            return round(class_deficit, 9), round(overall_deficit, 9), -SPLITS.index(name)

        chosen = max(active, key=score)
        assigned[patient] = chosen
        per_label[chosen].update(composition[patient])
        sizes[chosen] += sum(composition[patient].values())

    split_of = {i: assigned[patient] for patient, members in groups.items() for i in members}
    result: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for index, entry in enumerate(entries):
        result[split_of[index]].append(dict(entry))
    return result
