"""Blackboard types shared by the tests."""

from __future__ import annotations

from pydantic import BaseModel, Field

from flock.registry import flock_type


@flock_type
class Idea(BaseModel):
    topic: str = Field(min_length=1)


@flock_type
class Pizza(BaseModel):
    name: str
    toppings: list[str] = []


@flock_type
class Review(BaseModel):
    score: int = Field(ge=0, le=10)


@flock_type
class Note(BaseModel):
    text: str
