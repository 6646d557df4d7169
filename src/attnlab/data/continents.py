"""Country -> continent: a small hand-written labelled set for in-context classification.

Why this set: it is well defined (one answer per country), needs no download, has four
balanced classes whose names are single tokens in common byte-level BPE vocabularies
(" Africa", " Asia", " Europe", " America"), and tests recall of world knowledge through a
prompt format rather than reading sentiment. Countries spanning two continents (Russia,
Turkey, Kazakhstan, the Caucasus, Cyprus, Egypt's Sinai aside) and Oceania are left out; North,
Central and South America are one class, "America".
"""

from __future__ import annotations

#: continent -> 25 countries each
CONTINENTS: dict[str, tuple[str, ...]] = {
    "Africa": ("Nigeria", "Kenya", "Ethiopia", "Ghana", "Senegal", "Morocco", "Algeria",
               "Tunisia", "Egypt", "Sudan", "Uganda", "Tanzania", "Rwanda", "Angola", "Zambia",
               "Zimbabwe", "Botswana", "Namibia", "Mozambique", "Madagascar", "Cameroon", "Mali",
               "Niger", "Somalia", "Libya"),
    "Asia": ("China", "Japan", "India", "Pakistan", "Bangladesh", "Vietnam", "Thailand",
             "Indonesia", "Malaysia", "Philippines", "Mongolia", "Nepal", "Bhutan", "Laos",
             "Cambodia", "Myanmar", "Afghanistan", "Iran", "Iraq", "Syria", "Jordan",
             "Saudi Arabia", "Yemen", "Sri Lanka", "South Korea"),
    "Europe": ("France", "Germany", "Spain", "Portugal", "Italy", "Poland", "Sweden", "Norway",
               "Finland", "Denmark", "Ireland", "Belgium", "Netherlands", "Austria",
               "Switzerland", "Greece", "Hungary", "Romania", "Bulgaria", "Croatia", "Serbia",
               "Ukraine", "Czech Republic", "Slovakia", "Iceland"),
    "America": ("Canada", "Mexico", "Guatemala", "Honduras", "Nicaragua", "Costa Rica",
                "Panama", "Cuba", "Jamaica", "Haiti", "Colombia", "Venezuela", "Ecuador", "Peru",
                "Bolivia", "Brazil", "Paraguay", "Uruguay", "Argentina", "Chile", "Guyana",
                "Suriname", "El Salvador", "Belize", "United States"),
}


def load_continents() -> tuple[list[str], list[str]]:
    """(countries, continent names), 100 rows in a fixed order."""
    texts, labels = [], []
    for continent, countries in CONTINENTS.items():
        texts.extend(countries)
        labels.extend([continent] * len(countries))
    return texts, labels
