"""Object storage (s3://) through fsspec / s3fs: data copied to the volume, and existence checks.

Endpoint and credentials come from the environment as boto reads them (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_DEFAULT_REGION; in pods through
cluster.secrets), never from the job file. s3fs is imported only when an s3:// path is used.

A data prefix is copied to <root>/s3/<bucket>/<prefix>/ with a record of each object's size and ETag
beside it (.<name>.objects.json): a later start downloads only objects that changed or are new, and
removes local copies of objects that are gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
from pathlib import Path

from trainer.errors import first_line
from trainer.storage.atomic_files import atomic_write

S3_SCHEME = "s3://"
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")  # S3's rule for bucket names
log = logging.getLogger(__name__)


def split_url(url: str) -> tuple[str, str]:
    """(bucket, key-or-prefix) of s3://bucket/key; ValueError for anything else."""
    rest = url.removeprefix(S3_SCHEME).strip("/")
    bucket, _, key = rest.partition("/")
    if url.startswith(S3_SCHEME) and ("@" in bucket or ":" in bucket):  # never echo what may be a credential
        raise ValueError(f"{S3_SCHEME}***@.../{key}: an s3:// URL holds no credentials; pass them through "
                         "cluster.secrets")
    if not url.startswith(S3_SCHEME) or not bucket or any(p in (".", "..") for p in key.split("/") if key):
        raise ValueError(f"{url}: an object store path is s3://bucket[/prefix]")
    if not BUCKET_NAME.fullmatch(bucket):
        raise ValueError(f"{url}: bucket {bucket!r} is not an S3 bucket name (3-63 characters of a-z, 0-9, '.' "
                         "and '-', starting and ending with a letter or digit)")
    return bucket, key


def odd_object_name(rel: str) -> bool:
    """A relative object name that would not stay inside the folder it is copied to ('..', '.' or '' parts)."""
    return not rel or any(part in ("", ".", "..") for part in rel.split("/"))


def filesystem():
    """A fresh S3 filesystem: no instance or listing cache, so every call sees the bucket as it is now."""
    import s3fs

    for name in ("botocore", "aiobotocore", "s3fs"):  # "Found credentials in ..." on every call is noise
        logging.getLogger(name).setLevel(logging.WARNING)
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def describe_error(url: str, error: BaseException) -> str:
    """One line for a failed call: a missing bucket, a missing key, or what botocore said."""
    text = first_line(error)
    if "bucket does not exist" in text or "NoSuchBucket" in text:
        return f"{url}: no such bucket {split_url(url)[0]!r}"
    if isinstance(error, FileNotFoundError):
        return f"{url}: no such object or prefix"
    return f"{url}: {text}"


def objects(fs, url: str) -> dict[str, dict]:
    """{object path: info} behind a file or a prefix; FileNotFoundError when there is none."""
    bucket, key = split_url(url)
    path = f"{bucket}/{key}".rstrip("/")
    info = fs.info(path)
    if info["type"] == "file":
        return {path: info}
    found = fs.find(path + "/" if key else path, detail=True)
    if not found:
        raise FileNotFoundError(path)
    return found


def check(url: str, key: str, suffixes: tuple[str, ...]) -> list[str]:
    """Problems with an s3:// data path (the object or prefix exists and holds files ending in `suffixes`)."""
    try:
        found = objects(filesystem(), url)
    except Exception as e:  # botocore and s3fs raise many types; the message names the cause
        return [f"{key}: {describe_error(url, e)}"]
    if not any(name.endswith(suffixes) for name in found):
        return [f"{key}: {url}: no {'/'.join(suffixes)} objects"]
    return []


def check_bucket(url: str, key: str) -> list[str]:
    """Problems with an s3:// location to write to (its bucket must exist)."""
    try:
        filesystem().info(split_url(url)[0])  # head_bucket: raises what went wrong (exists() says False to all)
    except FileNotFoundError:
        return [f"{key}: {url}: no such bucket {split_url(url)[0]!r}"]
    except Exception as e:
        return [f"{key}: {describe_error(url, e)}"]
    return []


def materialize(url: str, key: str, root: Path, suffixes: tuple[str, ...]) -> Path:
    """Copy the objects behind `url` whose names end in `suffixes` into `root` (only what changed since the
    last copy); the local file or folder. Raises ValueError (one line, naming the key) when it cannot be read."""
    bucket, prefix = split_url(url)
    fs = filesystem()
    try:
        found = {name: info for name, info in objects(fs, url).items() if name.endswith(suffixes)}
    except Exception as e:
        raise ValueError(f"{key}: {describe_error(url, e)}") from e
    if not found:
        raise ValueError(f"{key}: {url}: no {'/'.join(suffixes)} objects")
    base = f"{bucket}/{prefix}".rstrip("/")
    single = list(found) == [base]  # the URL names one object
    for name in found if not single else ():  # a listed name must not lead outside the copy
        if odd_object_name(name[len(base) + 1:]):
            raise ValueError(f"{key}: {url}: odd object name {name!r}; nothing copied")
    local = root / "s3" / base
    local.parent.mkdir(parents=True, exist_ok=True)
    record_path = local.parent / f".{local.name}.objects.json"
    with _locked(local.parent / f".{local.name}.lock"):
        record = _read_record(record_path)
        fetched = 0
        for name, info in sorted(found.items()):
            dest = local if single else local / name[len(base) + 1:]
            stamp = [int(info["size"]), str(info.get("ETag", ""))]
            if record.get(name) == stamp and dest.is_file() and dest.stat().st_size == stamp[0]:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.part")
            try:
                fs.get_file(name, str(tmp))
            except Exception as e:
                raise ValueError(f"{key}: {describe_error(f'{S3_SCHEME}{name}', e)}") from e
            os.replace(tmp, dest)
            record[name] = stamp
            fetched += 1
            _write_record(record_path, record)  # after each object: an interrupted copy keeps what it has
        gone = sorted(set(record) - set(found))
        for name in gone:  # deleted in the bucket: a stale local copy would still be trained on
            stale = local if single else local / name[len(base) + 1:]
            stale.unlink(missing_ok=True)
            del record[name]
        _write_record(record_path, record)
    log.info("%s: %s -> %s (%d of %d objects downloaded, %d removed)", key, url, local, fetched, len(found), len(gone))
    return local


def _read_record(path: Path) -> dict[str, list]:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _write_record(path: Path, record: dict) -> None:
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True))


@contextlib.contextmanager
def _locked(path: Path):
    """Processes sharing the volume copy one at a time; the next finds everything up to date."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
