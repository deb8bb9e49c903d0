"""Merge episode stores (e.g. one per Ray actor or per machine) without losing or duplicating episodes."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from wfm_sim.datasets.store import EpisodeReader, EpisodeWriter, StoreError

# What must agree for two stores to be one dataset.
SCHEMA_KEYS = ("cameras", "image_size", "action_space", "source_env", "fps", "keys")


def _identity(r: EpisodeReader) -> dict:
    a = r.attrs
    return {k: a.get(k) for k in SCHEMA_KEYS} | {"source": a.get("source")}


def merge_stores(sources: list[str | Path], dest: str | Path, progress: bool = False) -> int:
    """Append every complete episode of ``sources`` to ``dest`` (created from the first source's schema).

    Episodes are copied under their keys, so an episode ``dest`` holds already is skipped: re-running
    an interrupted merge completes it and never duplicates. Refuses a store merged into itself and
    stores whose cameras, frame size, action space, fps, source or extras differ. Returns episodes appended.
    """
    if not sources:
        raise StoreError("merge needs at least one source store")
    readers = [EpisodeReader(p) for p in sources]
    dest = Path(dest)
    if dest.exists() and (dest / "zarr.json").is_file():
        target = EpisodeReader(dest)
        for r in readers:
            if r.attrs["store_id"] == target.attrs["store_id"] or r.path.resolve() == dest.resolve():
                raise StoreError(f"cannot merge {r.path} into itself ({dest})")
        readers_all = [target] + readers
    else:
        readers_all = readers
    first = readers_all[0]
    for r in readers_all[1:]:
        diff = [f"{k}: {first.path} has {first.attrs.get(k)!r}, {r.path} has {r.attrs.get(k)!r}"
                for k in (*SCHEMA_KEYS, "source") if _identity(first)[k] != _identity(r)[k]]
        if diff:
            raise StoreError("these stores are not one dataset: " + "; ".join(diff))
    src = readers[0]
    added = 0
    with EpisodeWriter(dest, src.cameras, src.image_size, src.action_space, src.fps, src.attrs.get("source_env", ""),
                       extras={k: (tuple(v[0]), v[1]) for k, v in src.attrs.get("extras", {}).items()},
                       metadata={k: src.attrs[k] for k in ("source", "source_version", "policy") if k in src.attrs}
                       ) as writer:
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
