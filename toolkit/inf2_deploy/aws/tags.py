"""Reconciling a SageMaker resource's tags with what a deploy asks for: AddTags, then DeleteTags.

A redeploy whose artifact and settings are unchanged may still change the
spec's tags; an update leaves the endpoint's own tags as they were (UpdateEndpoint
does not touch them). :func:`plan_tags` works out what to put and what to take
off one resource, and :func:`apply_tags` makes the two calls.

Only tags a deploy of this toolkit declared are ever removed: the toolkit's own
``inf2-deploy:*`` tags (which it overwrites, never drops) and the user tags that
the previous deploy put on (recorded on its endpoint config, which carries the
same tags as the endpoint). Tags someone added by other means stay.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .requests import TAG_VERSION
from .session import aws_errors

__all__ = ["OUR_TAG_PREFIX", "TagChanges", "apply_tags", "declared_user_tags", "plan_tags"]

#: the prefix of the tags the toolkit manages itself
OUR_TAG_PREFIX = "inf2-deploy:"


@dataclass(frozen=True)
class TagChanges:
    """What to do to one resource's tags, and the tags it had before.

    Args:
        arn: the resource.
        before: its tags when the changes were planned.
        put: tags to add, or to overwrite when the key exists with another value.
        remove: keys to delete.
    """

    arn: str
    before: Mapping[str, str] = field(default_factory=dict, repr=False)
    put: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.put or self.remove)

    @property
    def significant(self) -> bool:
        """True when more than the version tag changes: only then is a redeploy worth a retag."""
        return bool(self.remove) or any(key != TAG_VERSION for key in self.put)

    def inverse(self) -> TagChanges:
        """The changes that restore ``before`` (to undo these after a failed update)."""
        restore = {key: self.before[key] for key in (*self.put, *self.remove) if key in self.before}
        added = tuple(key for key in self.put if key not in self.before)
        return TagChanges(self.arn, {**self.before, **self.put}, restore, added)

    def summary(self) -> str:
        """The user's tags that change, for people: ``set team=ml; removed owner``."""
        shown = [f"{key}={value}" for key, value in self.put.items() if not key.startswith(OUR_TAG_PREFIX)]
        parts = [f"set {', '.join(shown)}"] if shown else []
        if self.remove:
            parts.append(f"removed {', '.join(self.remove)}")
        return "; ".join(parts) or "refreshed the inf2-deploy tags"


def declared_user_tags(tags: Mapping[str, str]) -> set[str]:
    """The user's tag keys among ``tags`` of a resource a deploy made (the toolkit's own left out)."""
    return {key for key in tags if not key.startswith(OUR_TAG_PREFIX)}


def plan_tags(arn: str, current: Mapping[str, str], desired: Iterable[dict], *,
              declared: Iterable[str] = ()) -> TagChanges:
    """The changes that take resource ``arn`` from ``current`` to ``desired`` (a Tags list).

    Args:
        arn: the resource.
        current: its tags now.
        desired: the deploy's tags, ``[{"Key": ..., "Value": ...}]``.
        declared: the user tag keys the previous deploy put on; those no longer desired are removed.
    """
    wanted = {tag["Key"]: tag["Value"] for tag in desired}
    put = {key: value for key, value in wanted.items() if current.get(key) != value}
    remove = tuple(sorted(key for key in set(declared) if key in current and key not in wanted
                          and not key.startswith(OUR_TAG_PREFIX)))
    return TagChanges(arn, dict(current), put, remove)


def apply_tags(sagemaker: Any, changes: TagChanges) -> None:
    """AddTags with ``changes.put``, then DeleteTags with ``changes.remove``; no call for an empty side.

    Raises:
        AwsError: a call failed.
    """
    if changes.put:
        with aws_errors(f"sagemaker:AddTags {changes.arn}"):
            sagemaker.add_tags(ResourceArn=changes.arn,
                               Tags=[{"Key": key, "Value": value} for key, value in changes.put.items()])
    if changes.remove:
        with aws_errors(f"sagemaker:DeleteTags {changes.arn}"):
            sagemaker.delete_tags(ResourceArn=changes.arn, TagKeys=list(changes.remove))
