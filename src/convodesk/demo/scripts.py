"""Who the demo's simulated customers are, and what they write (pure: no I/O, no clock).

A `Persona` is a customer with a fixed identity on one channel: WhatsApp and SMS identities
are MSISDNs without the ``+`` (as Sinch's callbacks carry them), Messenger identities are
page-scoped ids (digits). The numbers are from ranges set aside for fiction: Sweden's
070-1740 6xx, the UK's 07700 900xxx, and the US 555-01xx.

A `Script` is one visit: the customer's opener, a follow-up for each agent answer, a
reminder when nobody answers, and thanks at the end. `build_script` fills a topic's template
from a seed, so a seed always gives the same words (order numbers, items, the photo or not).
Photos go on WhatsApp and Messenger only (plain SMS has no media; MMS is another channel);
locations on WhatsApp only (Messenger's platform no longer delivers shared locations).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

PICTURE_CHANNELS = frozenset({"WHATSAPP", "MESSENGER"})
LOCATION_CHANNELS = frozenset({"WHATSAPP"})


@dataclass(frozen=True, kw_only=True)
class Persona:
    name: str
    channel: str
    identity: str
    profile_name: str | None  # what the channel shows (WhatsApp, Messenger); None on SMS


PERSONAS: tuple[Persona, ...] = (
    Persona(name="Maja Lindberg", channel="WHATSAPP", identity="46701740612", profile_name="Maja"),
    Persona(
        name="Oliver Hughes",
        channel="WHATSAPP",
        identity="447700900461",
        profile_name="Oliver H",
    ),
    Persona(
        name="Sofia Marino",
        channel="WHATSAPP",
        identity="46701740655",
        profile_name="Sofia Marino",
    ),
    Persona(name="Priya Nair", channel="WHATSAPP", identity="447700900872", profile_name="Priya"),
    Persona(name="Lars Nyberg", channel="WHATSAPP", identity="46701740689", profile_name="Lars N"),
    Persona(
        name="Emma Dubois",
        channel="MESSENGER",
        identity="7340912285516043",
        profile_name="Emma Dubois",
    ),
    Persona(
        name="Jonas Berg",
        channel="MESSENGER",
        identity="6815530472391826",
        profile_name="Jonas Berg",
    ),
    Persona(
        name="Aisha Khan",
        channel="MESSENGER",
        identity="5029981736640217",
        profile_name="Aisha Khan",
    ),
    Persona(
        name="Tomás Silva",
        channel="MESSENGER",
        identity="8462207719304551",
        profile_name="Tomás Silva",
    ),
    Persona(
        name="Hanna Kowalski",
        channel="MESSENGER",
        identity="3991827465501278",
        profile_name="Hanna Kowalski",
    ),
    Persona(name="Dana Whitfield", channel="SMS", identity="13125550172", profile_name=None),
    Persona(name="Marcus Reed", channel="SMS", identity="14155550123", profile_name=None),
    Persona(name="Linda Ortiz", channel="SMS", identity="16175550199", profile_name=None),
    Persona(name="Kevin Park", channel="SMS", identity="17185550110", profile_name=None),
    Persona(name="Rosa Delgado", channel="SMS", identity="12135550164", profile_name=None),
)


@dataclass(frozen=True, kw_only=True)
class Location:
    latitude: float
    longitude: float
    title: str
    label: str


@dataclass(frozen=True, kw_only=True)
class Say:
    """One message from the customer: exactly one of text, a picture's name, a location."""

    text: str | None = None
    picture: str | None = None
    location: Location | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.text, self.picture, self.location)) != 1:
            raise ValueError("a message is exactly one of text, picture, location")

    def describe(self) -> str:
        if self.text is not None:
            return self.text
        if self.picture is not None:
            return f"[photo {self.picture}]"
        assert self.location is not None
        return f"[location {self.location.title}, {self.location.label}]"


Turn = tuple[Say, ...]


@dataclass(frozen=True, kw_only=True)
class Script:
    topic: str
    opener: Turn
    follow_ups: tuple[Turn, ...]  # one per agent answer, in order
    reminder: Turn  # when nobody answers for a while (once per visit)
    thanks: Turn  # after the agent's answer to the last follow-up


@dataclass(frozen=True)
class _Place:
    street: str
    city: str
    latitude: float
    longitude: float

    def location(self) -> Location:
        return Location(
            latitude=self.latitude, longitude=self.longitude, title=self.street, label=self.city
        )


_PLACES = (
    _Place("Drottninggatan 53", "111 21 Stockholm", 59.3346, 18.0632),
    _Place("Kungsportsavenyen 21", "411 36 Göteborg", 57.7010, 11.9747),
    _Place("Marylebone Road 35", "London NW1 5LS", 51.5226, -0.1571),
    _Place("Prinsengracht 263", "1016 GV Amsterdam", 52.3752, 4.8840),
)
_ITEMS = ("coffee grinder", "pair of running shoes", "desk lamp", "rain jacket", "backpack")
_BROKEN = (("blender", "jug"), ("kettle", "glass"), ("table lamp", "shade"), ("teapot", "lid"))
_DAYS = ("Monday", "Tuesday", "Wednesday", "last week")


def _t(text: str) -> Turn:
    return (Say(text=text),)


def _order(rng: random.Random) -> str:
    return f"#{rng.randint(100_000, 999_999)}"


def _order_status(rng: random.Random, _channel: str, _pictures: bool) -> Script:
    item, day, order = rng.choice(_ITEMS), rng.choice(_DAYS), _order(rng)
    hello = rng.choice(("Hi!", "Hello,", "Hi there,"))
    return Script(
        topic="order status",
        opener=_t(f"{hello} I ordered a {item} {day} and it still hasn't arrived. Where is it?"),
        follow_ups=(
            _t(f"Sure, it's order {order}."),
            _t("The tracking page hasn't changed for three days, it just says 'in transit'."),
            _t("OK. Will I get a message when it's moving again?"),
        ),
        reminder=_t("Hello? Is anyone there? Still waiting to hear about my order."),
        thanks=_t(rng.choice(("Great, thanks a lot!", "Thanks for your help!", "Perfect, thanks"))),
    )


def _refund(rng: random.Random, channel: str, pictures: bool) -> Script:
    item, return_no = rng.choice(_ITEMS), f"R-{rng.randint(10_000, 99_999)}"
    receipt: tuple[Turn, ...] = ()
    if pictures and channel in PICTURE_CHANNELS and rng.random() < 0.5:
        receipt = (
            (Say(text="Here's the receipt from the post office."), Say(picture="receipt.png")),
        )
    return Script(
        topic="refund",
        opener=_t(f"Hello, I sent back a {item} two weeks ago but I haven't got my refund yet."),
        follow_ups=(
            _t(f"The return number is {return_no}, I used your prepaid label."),
            *receipt,
            _t("Will the money go back to my card, or do I get store credit?"),
        ),
        reminder=_t("Hi again, could someone please look at my refund?"),
        thanks=_t("Perfect, thank you!"),
    )


def _change_address(rng: random.Random, channel: str, _pictures: bool) -> Script:
    order, place = _order(rng), rng.choice(_PLACES)
    if channel in LOCATION_CHANNELS and rng.random() < 0.5:
        address: Turn = (Say(text="This is the new address:"), Say(location=place.location()))
    else:
        address = _t(f"The new address is {place.street}, {place.city}.")
    return Script(
        topic="change address",
        opener=_t(f"Hi, can I still change the delivery address for order {order}? I'm moving."),
        follow_ups=(address, _t("And the delivery date stays the same?")),
        reminder=_t("Sorry to push, but it ships soon. Can you still change the address?"),
        thanks=_t("Thank you so much, that's a relief!"),
    )


def _opening_hours(rng: random.Random, channel: str, _pictures: bool) -> Script:
    day, place = rng.choice(("Saturday", "Sunday", "the public holiday")), rng.choice(_PLACES)
    if channel in LOCATION_CHANNELS and rng.random() < 0.5:
        nearest: Turn = (Say(text="Which of your stores is closest to me?"),)
        nearest += (Say(location=place.location()),)
    else:
        nearest = _t(f"Is the store on {place.street} open then too?")
    return Script(
        topic="opening hours",
        opener=_t(f"Hi! What are your opening hours on {day}?"),
        follow_ups=(nearest, _t("Can I pick up an online order there?")),
        reminder=_t("Hello? I just need the opening hours :)"),
        thanks=_t(f"Thanks, see you on {day}!" if day != "the public holiday" else "Thanks!"),
    )


def _broken_product(rng: random.Random, channel: str, pictures: bool) -> Script:
    (item, part), order = rng.choice(_BROKEN), _order(rng)
    photos = pictures and channel in PICTURE_CHANNELS
    opener: Turn = _t(f"Hi, my {item} arrived today and the {part} is cracked.")
    if photos and rng.random() < 0.7:
        opener += (Say(picture="broken-product.png"),)
    box: Turn = _t(f"Order {order}. The box looked fine from the outside.")
    if photos and rng.random() < 0.5:
        box = (
            Say(text=f"Order {order}. The box was dented on one corner:"),
            Say(picture="parcel.png"),
        )
    return Script(
        topic="broken product",
        opener=opener,
        follow_ups=(
            box,
            _t("I'd rather have a replacement than a refund."),
            _t("Do I have to send the broken one back?"),
        ),
        reminder=_t(f"Hi, any news about my broken {item}?"),
        thanks=_t("Thanks, that's great service!"),
    )


_TOPICS: dict[str, Callable[[random.Random, str, bool], Script]] = {
    "order_status": _order_status,
    "refund": _refund,
    "change_address": _change_address,
    "opening_hours": _opening_hours,
    "broken_product": _broken_product,
}
TOPICS: tuple[str, ...] = tuple(_TOPICS)


def build_script(topic: str, seed: int, channel: str, *, pictures: bool) -> Script:
    """The words of one visit; ``pictures``: whether photos can be sent (a media host runs)."""
    if topic not in _TOPICS:
        raise ValueError(f"unknown topic {topic!r}; expected one of {', '.join(TOPICS)}")
    return _TOPICS[topic](random.Random(seed), channel, pictures)
