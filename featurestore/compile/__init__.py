"""Load a feature repository, validate it, build the plan, diff plans. Pure apart from imports."""

from featurestore.compile.build import build_plan, compile_repo
from featurestore.compile.diff import PlanDiff, diff_plans, unversioned_changes
from featurestore.compile.loader import LoadedRepo, load_repo

__all__ = ["LoadedRepo", "PlanDiff", "build_plan", "compile_repo", "diff_plans", "load_repo", "unversioned_changes"]
