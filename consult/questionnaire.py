"""Questionnaire definitions: YAML data files, one version per round, question codes stable across years."""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import pycountry
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from consult.errors import ConsultError

QuestionKind = Literal["multi_select", "single_select", "integer", "number", "yes_no", "text"]
MatchKey = Literal["token", "partnership_id", "email"]

ISO3166 = "iso3166"


class Option(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: str
    label: str
    previous_code: str | None = Field(default=None, description="The code this option had in the previous version.")


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    kind: QuestionKind
    label: str
    required: bool = False
    options: list[Option] | Literal["iso3166"] | None = None
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    previous_code: str | None = Field(default=None, description="The code this question had in the previous version.")

    @field_validator("options", mode="before")
    @classmethod
    def _options_from_strings(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"code": item, "label": item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _options_only_for_selects(self) -> Question:
        is_select = self.kind in ("multi_select", "single_select")
        if is_select and not self.options:
            raise ValueError(f"question {self.code!r}: a {self.kind} question needs options")
        if not is_select and self.options:
            raise ValueError(f"question {self.code!r}: only select questions take options")
        return self

    @property
    def is_select(self) -> bool:
        return self.kind in ("multi_select", "single_select")

    @cached_property
    def option_codes(self) -> frozenset[str]:
        """Allowed answer codes (ISO 3166-1 alpha-2 for ``options: iso3166``)."""
        if self.options == ISO3166:
            return frozenset(country.alpha_2 for country in pycountry.countries)
        return frozenset(option.code for option in self.options or [])

    def option_label(self, code: str) -> str:
        if self.options == ISO3166:
            return country_name(code)
        for option in self.options or []:
            if option.code == code:
                return option.label
        return code

    def previous_option_code(self, code: str) -> str:
        """The code an option had in the previous questionnaire version (itself when unchanged)."""
        if isinstance(self.options, list):
            for option in self.options:
                if option.code == code and option.previous_code:
                    return option.previous_code
        return code


class Questionnaire(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str
    version: int
    title: str
    match_by: list[MatchKey] = Field(default_factory=lambda: ["token"])
    dayfirst: bool = Field(
        default=False,
        description="Submit dates such as 04/03/2019 are day first (4 March); without it only ISO 8601 is read.",
    )
    questions: Annotated[list[Question], Field(min_length=1)]

    @model_validator(mode="after")
    def _codes_unique(self) -> Questionnaire:
        seen: set[str] = set()
        for question in self.questions:
            if question.code in seen:
                raise ValueError(f"question code {question.code!r} appears twice")
            seen.add(question.code)
        return self

    def question(self, code: str) -> Question:
        for question in self.questions:
            if question.code == code:
                return question
        raise KeyError(code)

    @property
    def codes(self) -> list[str]:
        return [question.code for question in self.questions]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()


def load_questionnaire(path: Path) -> Questionnaire:
    """Read and validate a questionnaire file; any problem is one ConsultError naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConsultError(f"{path}: questionnaire file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConsultError(f"{path}: not a readable YAML file ({str(error).splitlines()[0]})") from None
    return parse_questionnaire(data, source=str(path))


def parse_questionnaire(data: object, *, source: str) -> Questionnaire:
    if not isinstance(data, dict):
        raise ConsultError(f"{source}: a questionnaire must be a mapping with code, version, title and questions")
    try:
        return Questionnaire.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConsultError(f"{source}: {where}: {first['msg']}") from None


def country_name(code: str) -> str:
    """Common English name of an ISO 3166-1 alpha-2 code, as the ECCP writes it."""
    country = pycountry.countries.get(alpha_2=code.upper())
    if country is None:
        return code
    return _PREFERRED_COUNTRY_NAMES.get(country.alpha_2, getattr(country, "common_name", None) or country.name)


# The ECCP's published wording where it differs from ISO's short names.
_PREFERRED_COUNTRY_NAMES = {
    "US": "United States of America",
    "KR": "Republic of Korea",
    "TW": "Taiwan",
    "RU": "Russia",
    "IR": "Iran",
    "VN": "Vietnam",
}
