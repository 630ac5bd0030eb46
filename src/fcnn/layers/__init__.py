"""The public pure pairs, their frozen cfg dataclasses, typed caches and constructors."""
