"""Merge episode stores (e.g. one per Ray actor or per machine) without losing or duplicating episodes."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from wfm_sim.datasets.store import EpisodeReader, EpisodeWriter, StoreError
from wfm_sim.envs.sources import get_source

# What must agree for two stores to be one dataset.
SCHEMA_KEYS = ("cameras", "image_size", "action_space", "source_env", "fps", "keys")


def _identity(r: EpisodeReader, cameras: list[str] | None = None, source: str | None = None,
              selected: bool = False) -> dict:
    """What must agree: the schema, with ``cameras``/``source`` standing in for the store's own when
    the store is a selection source (``selected``)."""
    a = r.attrs
    ident = {k: a.get(k) for k in SCHEMA_KEYS} | {"source": a.get("source")}
    if selected and cameras is not None:
        ident["cameras"] = list(cameras)
        if source is not None:
            ident["source"] = source
    return ident


def _check_selection(readers: list[EpisodeReader], cameras: list[str], source: str | None) -> None:
    if len(set(cameras)) != len(cameras) or not cameras:
        raise StoreError(f"--cameras must name distinct cameras, got {cameras}")
    for r in readers:
        missing = [c for c in cameras if c not in r.cameras]
        if missing:
            raise StoreError(f"{r.path} has no camera {missing}; it holds {list(r.cameras)}")
    if source is not None:
        src_cams = list(get_source(source).cameras)
        if src_cams != list(cameras):
            raise StoreError(f"source {source!r} records cameras {src_cams}, not the selected {list(cameras)}; "
                             "name the source whose cameras these are, so that later `collect` runs can append")


def merge_stores(sources: list[str | Path], dest: str | Path, progress: bool = False,
                 cameras: list[str] | None = None, source: str | None = None) -> int:
    """Append every complete episode of ``sources`` to ``dest`` (created from the first source's schema).

    Episodes are copied under their keys, so an episode ``dest`` holds already is skipped: re-running
    an interrupted merge completes it and never duplicates. Refuses a store merged into itself and
    stores whose cameras, frame size, action space, fps, source or extras differ. ``cameras`` keeps only
    those views (in that order), e.g. the front camera of a 4-camera rig for a one-camera RL model;
    ``source`` then names the collect source those views are (``carracing-front``), so that episodes
    recorded later from it append to the result. Returns episodes appended.
    """
    if not sources:
        raise StoreError("merge needs at least one source store")
    if source is not None and cameras is None:
        raise StoreError("source= renames the source of a camera selection; give cameras= too")
    readers = [EpisodeReader(p) for p in sources]
    if cameras is not None:
        cameras = list(cameras)
        _check_selection(readers, cameras, source)
    dest = Path(dest)
    if dest.exists() and (dest / "zarr.json").is_file():
        target = EpisodeReader(dest)
        for r in readers:
            if r.attrs["store_id"] == target.attrs["store_id"] or r.path.resolve() == dest.resolve():
                raise StoreError(f"cannot merge {r.path} into itself ({dest})")
        readers_all = [(target, False)] + [(r, True) for r in readers]
    else:
        readers_all = [(r, True) for r in readers]
    first = _identity(readers_all[0][0], cameras, source, readers_all[0][1])
    for r, selected in readers_all[1:]:
        other = _identity(r, cameras, source, selected)
        diff = [f"{k}: {readers_all[0][0].path} has {first[k]!r}, {r.path} has {other[k]!r}"
                for k in (*SCHEMA_KEYS, "source") if first[k] != other[k]]
        if diff:
            raise StoreError("these stores are not one dataset: " + "; ".join(diff))
    src = readers[0]
    metadata = {k: src.attrs[k] for k in ("source", "source_version", "policy") if k in src.attrs}
    if cameras is not None:
        metadata["source"] = source if source is not None else metadata.get("source")
        metadata["selected_from"] = f"{', '.join(str(r.path) for r in readers)} (cameras {', '.join(cameras)})"
    with EpisodeWriter(dest, cameras or src.cameras, src.image_size, src.action_space, src.fps,
                       src.attrs.get("source_env", ""),
                       extras={k: (tuple(v[0]), v[1]) for k, v in src.attrs.get("extras", {}).items()},
                       metadata={k: v for k, v in metadata.items() if v is not None}) as writer:
        added = 0
        total = sum(r.num_episodes for r in readers)
        with tqdm(total=total, desc="merge", unit="ep", disable=not progress) as bar:
            seen = set()
            for r in readers:
                if r.attrs["store_id"] in seen:
                    bar.update(r.num_episodes)
                    continue  # the same store named twice
                seen.add(r.attrs["store_id"])
                keys = r.episode_keys
                for i in range(r.num_episodes):
                    if not writer.has(keys[i]):
                        writer.write_episode(r.episode(i))
                        added += 1
                    bar.update(1)
        merged = sorted(set(writer.root.attrs.get("merged_from") or []) | seen)
        writer.root.attrs["merged_from"] = merged
    return added


# Attributes a writer manages itself; everything else (source, policy, provenance...) is copied.
MANAGED = ("schema", "schema_version", "store_id", "fps", "cameras", "image_size", "action_space", "source_env",
           "keys", "extras", "stats", "merged_from", "filtered_from")


def filter_store(source: str | Path, dest: str | Path, keep: list[int], note: dict | None = None,
                 progress: bool = False) -> int:
    """Copy the episodes ``keep`` of ``source`` into ``dest`` (e.g. those above a quality threshold).

    ``dest`` gets the source's attributes (its generator's provenance included) and
    ``filtered_from`` = the source store, the kept episode indices and ``note`` (how they were
    chosen). Episodes are copied under their keys, so rerunning a killed filter completes it without
    duplicates; a ``dest`` filtered from another store is refused. Returns episodes appended.
    """
    src = EpisodeReader(source)
    dest = Path(dest)
    if dest.resolve() == src.path.resolve():
        raise StoreError(f"cannot filter {source} into itself: name a new store")
    bad = [i for i in keep if not 0 <= int(i) < src.num_episodes]
    if bad:
        raise StoreError(f"{source} has episodes 0..{src.num_episodes - 1}; cannot keep {bad[:5]}")
    origin = {"store": str(source), "store_id": src.attrs["store_id"], "episodes": [int(i) for i in keep],
              **(note or {})}
    if (dest / "zarr.json").is_file():
        have = EpisodeReader(dest).attrs.get("filtered_from") or {}
        if have.get("store_id") != origin["store_id"]:
            raise StoreError(f"{dest} was not filtered from {source}; name a new store")
        if have != origin:
            raise StoreError(f"{dest} was filtered from {source} with other settings ({_differs(have, origin)}); "
                             "name a new store")
    metadata = {k: v for k, v in src.attrs.items() if k not in MANAGED}
    keys = src.episode_keys
    with EpisodeWriter(dest, src.cameras, src.image_size, src.action_space, src.fps, src.attrs.get("source_env", ""),
                       extras={k: (tuple(v[0]), v[1]) for k, v in src.attrs.get("extras", {}).items()},
                       metadata=metadata) as writer:
        writer.root.attrs["filtered_from"] = origin
        added = 0
        for i in tqdm(keep, desc="filter", unit="ep", disable=not progress):
            if not writer.has(keys[i]):
                writer.write_episode(src.episode(int(i)))
                added += 1
    return added


def _differs(a: dict, b: dict) -> str:
    return ", ".join(f"{k}: {a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
                     if a.get(k) != b.get(k) and k != "episodes") or "other episodes kept"
