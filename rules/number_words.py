"""Numbers written as words, English and French (Belgian and Swiss tens included), shared by the readers of
times (rules.timing) and of measurements (rules.measure). Each reader takes the part it reads."""

from __future__ import annotations

ONES_EN = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}
ONES_FR = {"un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "sept": 7, "huit": 8, "neuf": 9}  # "six": as English
TEENS_EN = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
            "seventeen": 17, "eighteen": 18, "nineteen": 19}
TEENS_FR = {"dix": 10, "onze": 11, "douze": 12, "treize": 13, "quatorze": 14, "quinze": 15, "seize": 16,
            "dix-sept": 17, "dix-huit": 18, "dix-neuf": 19}
TENS_EN = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
TENS_FR = {"vingt": 20, "trente": 30, "quarante": 40, "cinquante": 50, "soixante": 60, "septante": 70, "huitante": 80,
           "octante": 80, "nonante": 90}

#: 1-9, 10-19 and the tens 20-90, English then French.
ONES = ONES_EN | ONES_FR
TEENS = TEENS_EN | TEENS_FR
TENS = TENS_EN | TENS_FR
