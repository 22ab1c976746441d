"""Recurring facts for the sample export: what memory (twin/memory.py) is for.

Each topic here has a `followup`: a later conversation in the same chat (two to six sessions on) that comes back
to what was settled the first time, with the same slots. The contact's follow-up names the link (a visitor, a
host, a date, a puppy) but not the fact; the owner's answer names the fact again (the crag, the spot, the
restaurant, the puppy's name). Facts change from episode to episode, so an adapter cannot learn them by heart:
only memory of the earlier conversation gives them. Used by sample_persona.py (appended to the chats' topics).
"""


def _line(who, *templates):
    return (who, templates)


def _topic(name, start, followup, weight=1.2):
    return {"name": name, "start": start, "steps": [], "own": None, "weight": weight, "once": False,
            "followup": followup}


SLOTS = {
    "host": ["Oddvar", "Gunnhild", "Ragnvald", "Torbjorg", "Alfhild", "Sigvart", "Ingeborg", "Halvdan"],
    "far_crag": ["Vingen", "Hellesylt", "Kvaloya", "Setesdal", "Jossingfjord", "Bohuslan", "Innerdalen",
                 "Sjurvarden"],
    "visitor": ["Kjersti", "Solveig", "Tarjei", "Oddny", "Vebjorn", "Ragnhild", "Eivor", "Torstein"],
    "spot": ["Munkholmen", "Sverresborg", "Ringve", "Kristiansten", "Ilabekken", "Fjellseter", "Skansen",
             "Lianvatnet"],
    "date_name": ["Henrik", "Viktor", "Marius", "Sindre", "Espen", "Joakim", "Fredrik", "Anders"],
    "resto": ["Fagn", "Credo", "Troll", "Bror", "Speilsalen", "Gubalari", "Baklandet Skydsstation", "Sabi"],
    "dish": ["scallops", "reindeer tartare", "halibut", "cloudberry tart", "lamb shank", "king crab"],
    "dog": ["Biscuit", "Pepper", "Waffle", "Nugget", "Mocca", "Pixel", "Tulle", "Bamse"],
}

TOMAS = [
    _topic("trip_plan",
           start=[_line("them", "Booked the cabin for the {month} trip! The host is called {host}, super friendly. "
                        "Where do we climb on day one?"),
                  _line("me", "sick // {far_crag} on day one // then we see", "{far_crag} first // its been on my "
                        "list forever"),
                  _line("them", "{far_crag} it is 🙌")],
           followup=[_line("them", "{host} just messaged, the cabin is confirmed 🙌 // What was the plan for day "
                           "one again?"),
                     _line("me", "{far_crag} // like we said", "{far_crag} on day one // bring the long rope")]),
]

INGRID = [
    _topic("visitor",
           start=[_line("them", "{visitor} from work is visiting Trondheim next weekend! What should I show her?"),
                  _line("me", "take her to {spot} // everyone loves it", "{spot} for sure // and coffee at "
                        "solsiden after")],
           followup=[_line("them", "{visitor} went home today, she had the best time!"),
                     _line("me", "told you // {spot} never fails", "did you go to {spot} in the end")]),
]

JONAS = [
    _topic("date_place",
           start=[_line("them", "Got a date with {date_name} on Friday. Any restaurant tips?"),
                  _line("me", "{resto} // get the {dish}", "go to {resto} // the {dish} is unreal")],
           followup=[_line("them", "The date with {date_name} went great btw. What was that place called again?"),
                     _line("me", "{resto} // told you", "{resto} // did you get the {dish}")]),
]

SOFIE = [
    _topic("puppy",
           start=[_line("them", "We're looking after my neighbour's puppy this week! Her name is {dog} 🐶"),
                  _line("me", "{dog}!! // bring her to the shop", "omg {dog} // photos now")],
           followup=[_line("them", "The puppy went back home today, the flat is so quiet now 😢"),
                     _line("me", "miss {dog} already", "noo // {dog} was the best")]),
]

BY_CHAT = {"tomas": TOMAS, "ingrid": INGRID, "jonas": JONAS, "sofie": SOFIE}
