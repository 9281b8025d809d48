"""A model folder's lifecycle, the one home of everything that writes one (compress,
decompress, calibrated compression, the SpQR converter) and of the file names readers
look for.

A run goes:

1. `check_input_folder(src)`; the input's shards are `shard_paths(src)` (index order).
2. `with run_folder(src, dst, overwrite, key) as out:` prepares the destination: it
   refuses the input folder itself or a file, takes the folder's lock and writes the
   manifest (`MANIFEST`), which makes readers refuse the folder until the run ends
   (`refuse_incomplete`). `key` (`run_key(..., input_fingerprint(shards), ...)`)
   identifies the run so that its rerun after a kill resumes; a run that cannot resume
   uses `output_folder(src, dst, overwrite)` (key None) and starts over. A folder that
   holds other files (and is not an interrupted run's) is refused with `OutputNotEmpty`
   unless `overwrite`.
3. Shards: `write_resumably(out, jobs, write_one)` writes each one that an earlier,
   interrupted run of the same key did not finish (finished ones are verified against
   the manifest and kept); a run without a key (calibrated compression, the SpQR
   converter) writes its shards directly.
4. Last, `write_index(src, dst, shards)` from the written headers, `write_config(dst,
   config)`, and `copy_other_files(src, dst, shards)`; leaving the `with` removes the
   manifest and the lock. An error removes what the run wrote; an interruption keeps
   finished shards for the rerun (see `run`).

Modules: `files` (names, shard list, JSON read and atomic write, config.json),
`run` (lock, manifest, resume), `output` (the input check and the writing steps).
"""

from .files import (CONFIG_NAME, INDEX_NAME, MANIFEST, find_config, read_json, refuse_incomplete, shard_paths,
                    write_json_atomic)
from .output import (check_input_folder, copy_other_files, output_folder, write_config, write_index,
                     write_resumably)
from .run import OutputNotEmpty, RunFolder, input_fingerprint, run_folder, run_key

__all__ = [
    "CONFIG_NAME",
    "INDEX_NAME",
    "MANIFEST",
    "OutputNotEmpty",
    "RunFolder",
    "check_input_folder",
    "copy_other_files",
    "find_config",
    "input_fingerprint",
    "output_folder",
    "read_json",
    "refuse_incomplete",
    "run_folder",
    "run_key",
    "shard_paths",
    "write_config",
    "write_index",
    "write_json_atomic",
    "write_resumably",
]
