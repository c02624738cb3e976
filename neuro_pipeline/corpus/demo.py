"""The embedded default corpus: English sentences from a small grammar, tagged with UPOS.

Start here: :func:`generate_demo_corpus` returns ``n_sentences`` sentences, each word
labelled with its Universal Dependencies part-of-speech tag (UPOS). It needs no download
and is deterministic: the same arguments give the same sentences in every process.

What it is
----------
A hand-written generative grammar (17 families of sentence templates, most with several
variants, recursing into subordinate and relative clauses up to depth 2) over a
hand-written lexicon of about 600 English words. Every word is emitted together with its
tag, so the labels are correct by construction rather than predicted by a tagger. Tagging follows the
UD English (EWT) conventions: possessive determiners (*my*, *her*) and relative *that*,
*who*, *which* are PRON; existential *there* is PRON; copular *be*, perfect *have*,
supportive *do*, modals and contracted *'s*/*'m*/*'re* are AUX;
infinitival *to*, *not*/*n't* and possessive *'s* are PART; *today*/*tomorrow* are NOUN;
*etc* is NOUN; *when* introducing a clause is ADV; *$*, *%*, *+*, *=* and emoticons are
SYM; foreign words in quotes are X.

Tags covered: all 17 UPOS tags (ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN
PUNCT SCONJ SYM VERB X).

Templates: declaratives in eight tenses/aspects (present, past, future, modal, progressive,
perfect, negated, passive) with transitive, intransitive, copular, motion, cognition (*that*
clauses) and desire (*to* infinitives) verbs; yes/no, *wh*- and tag questions;
imperatives; subordinate clauses (*because*, *although*, *if*, *while*, *before*, ...);
clause, noun-phrase and adjective coordination; subject and object relative clauses;
existentials; possessives and contractions; comparatives; interjections; numbers with
money, percentages and arithmetic; quotations of foreign words; lists.

How ambiguity arises
--------------------
A probe must use context, because many word forms take different tags in different
templates, so a word -> most-frequent-tag lookup stays well below 100% token accuracy:

* noun/verb forms: *run*, *runs*, *watch*, *light*, *plant*, *book*, *play*, *work*, *flies*,
  ... appear as nouns in noun phrases and as verbs in verb phrases;
* adjective/verb forms: *clean*, *open*, *dry*, *warm*, *empty*, *clear*, *close* (*the door
  is open* vs *open the door*); adjective/adverb forms: *fast*, *hard*, *early*, *late*;
* *that*: DET (*that book*), PRON (*That is true*, relative *the dog that barked*), SCONJ
  (*said that it rained*); *which*/*what*: DET before a noun, PRON otherwise;
* *to*: PART before an infinitive, ADP before a noun phrase;
* *before*, *after*, *since*, *until*, *as*: ADP before a noun phrase, SCONJ before a
  clause; *once*: ADV (*visited once*) or SCONJ; *like*: VERB (*I like tea*) or ADP
  (*looks like a cat*);
* *back*: ADV (*came back*), NOUN (*my back*), ADJ (*the back door*); *home*: ADV/NOUN;
  *left*: VERB/ADJ/ADV; *right*: ADJ/ADV; *there*: PRON (*there is*)/ADV; *well*: ADV/ADJ
  (and INTJ at the start of a sentence); *No*: DET/INTJ;
* *has*/*have*/*had*, *do*/*does*/*did*: VERB as main verbs, AUX as auxiliaries;
  *'s*: PART (possessive), AUX (*it's*), PRON (*let's*); *can*: AUX/NOUN; *May*: AUX/PROPN.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from neuro_pipeline.types import Sentence

__all__ = ["DEMO_CORPUS_NAME", "DEMO_SOURCE", "generate_demo_corpus"]

logger = logging.getLogger(__name__)

#: Name of the embedded corpus; bump the version whenever the output changes.
DEMO_CORPUS_NAME = "upos-grammar-v1"
#: ``Sentence.source`` of every demo sentence.
DEMO_SOURCE = f"demo:{DEMO_CORPUS_NAME}"

Tok = tuple[str, str]  # (word form, UPOS)

# ---------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------

# Nouns that are never verbs here.
_THING_NOUNS = """
apple bag ball basket bed bell bike boat bone bottle bread bridge bus cake camera candle
car card chair cheese clock coat computer cookie cup desk door dress egg engine fence flag
flower fork garden gate gift glass glove guitar hat hill house island jacket kettle kitchen
ladder lake lamp leaf letter meal mirror mountain nest newspaper ocean orange page pen
pencil piano picture pie pillow plate pocket pond pot radio river road roof room sandwich
school shirt shoe song spoon stone story street table tent ticket tower toy tree truck
umbrella wall wallet window word city village museum library hospital station airport
office bank beach forest farm movie game idea problem question lesson message report
coffee tea soup rice can key knife box home
""".split()

# Nouns that denote people or animals (subjects of saying, thinking and wanting).
_ANIMATE_NOUNS = """
teacher doctor student child farmer artist baker driver nurse pilot singer writer neighbor
friend girl boy woman man person player officer chef lawyer manager worker visitor guest
king queen actor scientist engineer tourist cousin uncle aunt sister brother mother father
baby dog cat puppy horse bird
""".split()

# Forms that are both nouns and verbs: the main source of noun/verb ambiguity.
_NOUN_VERBS = """
answer book call change cook cover dance drink drive face fall fight file fish fly guide
help hope iron jump kick land laugh lead light look mail mark match move name need order
paint park phone place plan plant play point rest return ring rock roll run sail ship shop
show sign sleep smell smile sound stand start step stop study swim talk taste test text
touch trade train trust turn use view visit vote wait walk watch water wave wish work ride
guess
""".split()

_IRREGULAR_PLURALS = {
    "child": "children", "woman": "women", "man": "men", "person": "people", "fish": "fish",
    "leaf": "leaves", "knife": "knives",
}

# Adjectives that are never verbs or adverbs here.
_ADJECTIVES = """
big small old new young red blue green yellow black white quiet loud happy sad bright dark
cold hot soft heavy dirty full wet busy tired hungry angry brave calm careful clever famous
fresh funny gentle kind lazy lucky nervous polite proud quick rich poor safe short tall long
strange strong sweet thick thin tiny wide wild wise wooden huge narrow fine ready simple
""".split()
# Adjectives that are also (transitive) verbs.
_ADJECTIVE_VERBS = "clean open dry warm empty clear close cool free".split()
# Adjectives that are also adverbs (after a verb they are ADV).
_ADJECTIVE_ADVERBS = "fast hard early late".split()
_COMPARATIVES = {
    "big": "bigger", "small": "smaller", "old": "older", "young": "younger",
    "tall": "taller", "short": "shorter", "fast": "faster", "quick": "quicker",
    "strong": "stronger", "heavy": "heavier", "happy": "happier", "cold": "colder",
    "warm": "warmer", "bright": "brighter", "quiet": "quieter", "rich": "richer",
    "light": "lighter", "early": "earlier", "late": "later", "clean": "cleaner",
}

_MANNER_ADVERBS = """
quickly slowly quietly loudly carefully happily suddenly badly easily gently politely
proudly nervously calmly well again together outside inside upstairs downstairs abroad
once twice
""".split()
_FREQUENCY_ADVERBS = "often never always sometimes usually rarely already just also still".split()
_DEGREE_ADVERBS = "very really quite too so extremely rather".split()
_TIME_NOUNS = "today tomorrow yesterday tonight".split()  # NOUN in UD English
_TIME_ADVERBS = "now soon later then recently".split()

_PLACE_PREPOSITIONS = """
in on at under near behind beside above below over through across into onto toward from
with without inside outside around along past by
""".split()

_FIRST_NAMES = """
Alice Bob Maria Omar Priya Chen Lucas Sofia Kenji Amara David Elena Tom Sarah Ahmed Yuki
Ivan Fatima Leo Nina Grace Mateo Aisha Hannah Raj Olga Pedro Mei
""".split()
_PLACE_NAMES = """
London Paris Tokyo Lagos Lima Berlin Cairo Mumbai Toronto Sydney Boston Madrid Oslo
Nairobi Seoul Chicago Dublin Rome Delhi Vienna
""".split()
_MULTIWORD_PLACES = ("New York", "New Delhi", "San Francisco", "Hong Kong", "Buenos Aires")
_MONTHS = "January March April May June July August October December".split()
_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

_NUMBER_WORDS = "two three four five six seven eight nine ten twelve twenty fifty hundred".split()
_INTERJECTIONS = "oh wow hey yes yeah no well hi hello okay ouch ah um".split()
_FOREIGN = (("merci",), ("danke",), ("gracias",), ("bonjour",), ("ciao",), ("arigato",),
            ("c'est", "la", "vie"), ("hasta", "la", "vista"), ("mon", "ami"), ("bon", "voyage"),
            ("guten", "tag"), ("que", "sera", "sera"), ("dolce", "vita"), ("carpe", "diem"))
_EMOTICONS = (":)", ":(", ";)", ":-)", ":D")

# Verb frames (base forms). Noun/verb forms from _NOUN_VERBS are mixed in deliberately.
_TRANSITIVE = """
answer book call change cook cover drink drive face fight file guide help iron kick lead
light mail mark match move name order paint park phone place plan plant play return ring
roll run sail ship show sign smell study taste test text touch trade train trust turn use
view visit walk watch water ride
bring build buy carry catch clean open close dry warm empty clear find fix hold keep leave
make meet miss pack pick pull push read sell send take teach wash write see hear love hate
eat bake borrow choose collect deliver describe draw enjoy explain fill fold follow hide
lift lose notice prepare protect receive remember repair share throw wear win have do get
""".split()
_INTRANSITIVE = """
dance fish jump laugh rest run sail shop sleep smile stand start step stop swim talk vote
wait walk wave work fall fly land
arrive sit sing cry agree sneeze travel hurry relax shout whisper grow wake listen
""".split()
_COGNITION = """
say think know believe hope feel hear notice remember forget realize guess claim
""".split()
_DESIRE = """
want try need plan hope like love hate decide forget remember promise learn refuse prefer
expect start choose
""".split()
_MOTION = "go come walk run drive fly travel return move hurry swim sail ride".split()

# Irregular verbs: base, 3rd person singular, past, past participle, gerund.
_IRREGULAR_VERBS: dict[str, tuple[str, ...]] = {
    forms[0]: tuple(forms[1:])
    for forms in (entry.split() for entry in """
run runs ran run running | drink drinks drank drunk drinking
drive drives drove driven driving | fight fights fought fought fighting
lead leads led led leading | ring rings rang rung ringing
show shows showed shown showing | sleep sleeps slept slept sleeping
stand stands stood stood standing | swim swims swam swum swimming
fly flies flew flown flying | light lights lit lit lighting
make makes made made making | take takes took taken taking
see sees saw seen seeing | find finds found found finding
buy buys bought bought buying | sell sells sold sold selling
bring brings brought brought bringing | write writes wrote written writing
read reads read read reading | eat eats ate eaten eating
get gets got gotten getting | hold holds held held holding
build builds built built building | draw draws drew drawn drawing
keep keeps kept kept keeping | leave leaves left left leaving
catch catches caught caught catching | teach teaches taught taught teaching
know knows knew known knowing | think thinks thought thought thinking
say says said said saying | feel feels felt felt feeling
hear hears heard heard hearing | go goes went gone going
come comes came come coming | sit sits sat sat sitting
sing sings sang sung singing | win wins won won winning
lose loses lost lost losing | meet meets met met meeting
send sends sent sent sending | wear wears wore worn wearing
forget forgets forgot forgotten forgetting | have has had had having
do does did done doing | choose chooses chose chosen choosing
hide hides hid hidden hiding | throw throws threw thrown throwing
fall falls fell fallen falling | grow grows grew grown growing
wake wakes woke woken waking | ride rides rode ridden riding
give gives gave given giving | lend lends lent lent lending
pay pays paid paid paying | spend spends spent spent spending
hurt hurts hurt hurt hurting | mean means meant meant meaning
""".replace("\n", "|").split("|") if entry.strip())
}
# Verbs that double their final consonant before -ed / -ing.
_DOUBLING = frozenset("stop plan shop step ship prefer".split())

_VOWELS = "aeiouAEIOU"


def _plural(noun: str) -> str:
    if noun in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[noun]
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in _VOWELS:
        return noun[:-1] + "ies"
    return noun + "s"


def _verb_forms(base: str) -> tuple[str, str, str, str]:
    """(3rd person singular, past, past participle, gerund) of a verb."""
    if base in _IRREGULAR_VERBS:
        return _IRREGULAR_VERBS[base]
    if base.endswith(("s", "x", "z", "ch", "sh", "o")):
        third = base + "es"
    elif base.endswith("y") and base[-2] not in _VOWELS:
        third = base[:-1] + "ies"
    else:
        third = base + "s"
    if base in _DOUBLING:
        past, gerund = base + base[-1] + "ed", base + base[-1] + "ing"
    elif base.endswith("e"):
        past, gerund = base + "d", (base if base.endswith("ee") else base[:-1]) + "ing"
    elif base.endswith("y") and base[-2] not in _VOWELS:
        past, gerund = base[:-1] + "ied", base + "ing"
    else:
        past, gerund = base + "ed", base + "ing"
    return third, past, past, gerund


# Subject pronoun -> (object form, person, plural)
_PERSONAL = {
    "I": ("me", 1, False), "you": ("you", 2, True), "he": ("him", 3, False),
    "she": ("her", 3, False), "it": ("it", 3, False), "we": ("us", 1, True),
    "they": ("them", 3, True),
}
_POSSESSIVES = "my your his her its our their".split()
_CONTRACTED_BE = {"I": "'m", "you": "'re", "we": "'re", "they": "'re", "he": "'s", "she": "'s",
                  "it": "'s"}

Agr = tuple[int, bool]  # (person, plural)
_THIRD_SINGULAR: Agr = (3, False)
_THIRD_PLURAL: Agr = (3, True)


class _Grammar:
    """Sentence generator; all randomness comes from one ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    # -- small helpers ------------------------------------------------------------------

    def pick(self, options):
        return options[self.rng.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def weighted(self, table: list[tuple[float, Callable[[], list[Tok]]]]) -> list[Tok]:
        total = sum(weight for weight, _ in table)
        x = self.rng.random() * total
        for weight, make in table:
            x -= weight
            if x < 0:
                return make()
        return table[-1][1]()

    # -- words --------------------------------------------------------------------------

    def noun(self, *, animate: bool = False) -> str:
        if animate:
            return self.pick(_ANIMATE_NOUNS)
        # A third of common-noun slots use a form that is also a verb.
        return self.pick(_NOUN_VERBS) if self.chance(0.35) else self.pick(_THING_NOUNS)

    def adjective(self, *, attributive: bool = False) -> list[Tok]:
        r = self.rng.random()
        if r < 0.2:
            word = self.pick(_ADJECTIVE_VERBS)
        elif r < 0.3:
            word = self.pick(_ADJECTIVE_ADVERBS)
        elif r < 0.34:
            word = "light"
        elif attributive and r < 0.40:
            word = self.pick(("back", "left", "right", "front"))
        else:
            word = self.pick(_ADJECTIVES)
        toks: list[Tok] = []
        if not attributive and self.chance(0.3):
            toks.append((self.pick(_DEGREE_ADVERBS), "ADV"))
        toks.append((word, "ADJ"))
        return toks

    def proper_noun(self) -> list[Tok]:
        r = self.rng.random()
        if r < 0.6:
            return [(self.pick(_FIRST_NAMES), "PROPN")]
        if r < 0.85:
            return [(self.pick(_PLACE_NAMES), "PROPN")]
        return [(w, "PROPN") for w in self.pick(_MULTIWORD_PLACES).split()]

    def place(self) -> list[Tok]:
        r = self.rng.random()
        if r < 0.75:
            return [(self.pick(_PLACE_NAMES), "PROPN")]
        return [(w, "PROPN") for w in self.pick(_MULTIWORD_PLACES).split()]

    def number(self) -> list[Tok]:
        r = self.rng.random()
        if r < 0.45:
            return [(self.pick(_NUMBER_WORDS), "NUM")]
        if r < 0.8:
            return [(str(self.rng.randint(2, 99)), "NUM")]
        if r < 0.9:
            return [(f"{self.rng.randint(1, 9)},{self.rng.randint(0, 999):03d}", "NUM")]
        return [(f"{self.rng.randint(1, 20)}.{self.rng.randint(1, 9)}", "NUM")]

    def amount(self) -> list[Tok]:
        """A number written in digits, for money and percentages."""
        if self.chance(0.8):
            return [(str(self.rng.randint(2, 99)), "NUM")]
        return [(f"{self.rng.randint(1, 20)}.{self.rng.randint(1, 9)}", "NUM")]

    # -- noun phrases -------------------------------------------------------------------

    def determiner(self, plural: bool, next_word: str) -> list[Tok]:
        if plural:
            r = self.rng.random()
            if r < 0.45:
                return [("the", "DET")]
            if r < 0.6:
                return [(self.pick(("these", "those", "some", "all", "no", "both")), "DET")]
            if r < 0.8:
                return [(self.pick(_POSSESSIVES), "PRON")]
            if r < 0.9:
                return [("many", "ADJ")]
            return self.number()
        r = self.rng.random()
        if r < 0.4:
            return [("the", "DET")]
        if r < 0.6:
            return [("an" if next_word[0] in _VOWELS else "a", "DET")]
        if r < 0.75:
            return [(self.pick(("this", "that", "every", "each", "another", "no", "that")),
                     "DET")]
        return [(self.pick(_POSSESSIVES), "PRON")]

    def common_np(self, *, plural: bool | None = None, animate: bool = False,
                  depth: int = 0, allow_rel: bool = True) -> tuple[list[Tok], Agr]:
        if plural is None:
            plural = self.chance(0.35)
        head = self.noun(animate=animate)
        form = _plural(head) if plural else head
        modifiers: list[Tok] = []
        if self.chance(0.3):
            modifiers = self.adjective(attributive=True)
        elif not animate and self.chance(0.06):
            modifiers = [(self.pick(_THING_NOUNS), "NOUN")]  # noun compound: "the bus station"
        first = modifiers[0][0] if modifiers else form
        toks = self.determiner(plural, first) + modifiers + [(form, "NOUN")]
        agr = _THIRD_PLURAL if plural else _THIRD_SINGULAR
        if depth < 2 and allow_rel and self.chance(0.12):
            toks += self.relative_clause(animate, agr, depth + 1)
        elif depth < 2 and self.chance(0.1):
            prep = self.pick(("of", "in", "on", "near", "with", "from"))
            toks += [(prep, "ADP")] + self.object_np(depth + 1, allow_rel=False)
        return toks, agr

    def subject_np(self, depth: int = 0, *, animate: bool = False) -> tuple[list[Tok], Agr]:
        r = self.rng.random()
        if r < 0.3:
            pronoun = self.pick(tuple(_PERSONAL))
            _, person, plural = _PERSONAL[pronoun]
            return [(pronoun, "PRON")], (person, plural)
        if r < 0.45:
            return self.proper_noun(), _THIRD_SINGULAR
        if r < 0.5:
            np_a, _ = self.common_np(animate=animate, depth=2)
            np_b = self.proper_noun() if self.chance(0.5) else self.common_np(
                animate=animate, depth=2)[0]
            return np_a + [(self.pick(("and", "or")), "CCONJ")] + np_b, _THIRD_PLURAL
        if r < 0.55 and not animate:
            owner = self.proper_noun() if self.chance(0.6) else self.common_np(
                animate=True, depth=2, plural=False)[0]
            head = self.noun()
            return owner + [("'s", "PART"), (head, "NOUN")], _THIRD_SINGULAR
        return self.common_np(animate=animate or self.chance(0.5), depth=depth)

    def object_np(self, depth: int = 0, *, allow_rel: bool = True) -> list[Tok]:
        r = self.rng.random()
        if r < 0.15:
            return [(self.pick([o for o, _, _ in _PERSONAL.values()]), "PRON")]
        if r < 0.25:
            return self.proper_noun()
        if r < 0.28:
            return [(self.pick(("something", "nothing", "everything", "someone", "that",
                                "this", "it")), "PRON")]
        return self.common_np(animate=self.chance(0.3), depth=depth, allow_rel=allow_rel)[0]

    def relative_clause(self, animate: bool, agr: Agr, depth: int) -> list[Tok]:
        pronoun = "that" if self.chance(0.5) else ("who" if animate else "which")
        if self.chance(0.6):  # subject relative: "the dog that chased the cat"
            return [(pronoun, "PRON")] + self.verb_phrase(agr, depth)
        subject, sub_agr = self.subject_np(depth + 1)
        verb = self.pick(_TRANSITIVE)
        return [(pronoun, "PRON")] + subject + self.finite(verb, sub_agr)

    # -- verbs --------------------------------------------------------------------------

    @staticmethod
    def be(agr: Agr, past: bool) -> str:
        person, plural = agr
        if past:
            return "were" if plural or person == 2 else "was"
        if person == 1 and not plural:
            return "am"
        return "is" if person == 3 and not plural else "are"

    @staticmethod
    def third_singular(agr: Agr) -> bool:
        return agr == _THIRD_SINGULAR

    def finite(self, verb: str, agr: Agr, tense: str | None = None) -> list[Tok]:
        """The verb group of a clause: auxiliaries (AUX, PART) and the main verb (VERB)."""
        third, past, participle, gerund = _verb_forms(verb)
        if tense is None:
            tense = self.pick(("present", "present", "past", "past", "past", "future",
                               "modal", "progressive", "perfect", "negative"))
        s3 = self.third_singular(agr)
        if tense == "present":
            return [(third if s3 else verb, "VERB")]
        if tense == "past":
            return [(past, "VERB")]
        if tense == "future":
            return [("will", "AUX"), (verb, "VERB")]
        if tense == "modal":
            modal = self.pick(("can", "could", "should", "must", "might", "may", "would"))
            toks = [(modal, "AUX")]
            if self.chance(0.25):
                toks.append(("not", "PART") if self.chance(0.7) else ("never", "ADV"))
            return toks + [(verb, "VERB")]
        if tense == "progressive":
            return [(self.be(agr, self.chance(0.4)), "AUX"), (gerund, "VERB")]
        if tense == "perfect":
            have = "had" if self.chance(0.3) else ("has" if s3 else "have")
            return [(have, "AUX"), (participle, "VERB")]
        do = "did" if self.chance(0.5) else ("does" if s3 else "do")
        return [(do, "AUX"), (self.pick(("not", "n't")), "PART"), (verb, "VERB")]

    def adverbial(self, depth: int) -> list[Tok]:
        r = self.rng.random()
        if r < 0.35:
            return [(self.pick(_MANNER_ADVERBS), "ADV")]
        if r < 0.45:
            return [(self.pick(_ADJECTIVE_ADVERBS), "ADV")]
        if r < 0.55:
            return [(self.pick(_TIME_NOUNS), "NOUN")]
        if r < 0.62:
            return [(self.pick(_TIME_ADVERBS), "ADV")]
        if r < 0.67:
            return [("on", "ADP"), (self.pick(_WEEKDAYS), "PROPN")]
        if r < 0.71:
            return [("in", "ADP"), (self.pick(_MONTHS), "PROPN")]
        if r < 0.75:
            return [(self.pick(("back", "home", "away", "there", "here")), "ADV")]
        prep = self.pick(_PLACE_PREPOSITIONS)
        return [(prep, "ADP")] + self.object_np(depth + 1, allow_rel=False)

    def verb_phrase(self, agr: Agr, depth: int = 0) -> list[Tok]:
        """A predicate agreeing with a subject of ``agr``."""

        def transitive() -> list[Tok]:
            verb = self.pick(_ADJECTIVE_VERBS) if self.chance(0.1) else self.pick(_TRANSITIVE)
            return self.finite(verb, agr) + self.object_np(depth + 1)

        def intransitive() -> list[Tok]:
            toks = self.finite(self.pick(_INTRANSITIVE), agr)
            return toks + self.adverbial(depth) if self.chance(0.6) else toks

        def copula() -> list[Tok]:
            verb = [(self.be(agr, self.chance(0.4)), "AUX")]
            if self.chance(0.15):
                verb.append(("not", "PART"))
            r = self.rng.random()
            if r < 0.55:
                return verb + self.adjective()
            if r < 0.8:
                return verb + self.common_np(plural=agr[1], depth=depth + 1)[0]
            return verb + [(self.pick(_PLACE_PREPOSITIONS[:12]), "ADP")] + self.object_np(
                depth + 1, allow_rel=False)

        def motion() -> list[Tok]:
            toks = self.finite(self.pick(_MOTION), agr)
            if self.chance(0.25):
                toks.append(("back", "ADV"))
            if self.chance(0.3):
                return toks + [("home", "ADV")]
            goal = self.place() if self.chance(0.4) else self.object_np(depth + 1)
            toks += [("to", "ADP")] + goal
            if depth < 2 and self.chance(0.3):
                toks += [("to", "PART"), (self.pick(_TRANSITIVE), "VERB")] + self.object_np(
                    depth + 1, allow_rel=False)
            return toks

        def cognition() -> list[Tok]:
            toks = self.finite(self.pick(_COGNITION), agr)
            if self.chance(0.75):
                toks.append(("that", "SCONJ"))
            return toks + self.clause(depth + 1)

        def desire() -> list[Tok]:
            toks = self.finite(self.pick(_DESIRE), agr) + [("to", "PART")]
            return toks + self.bare_vp(depth + 1)

        def like() -> list[Tok]:
            r = self.rng.random()
            if r < 0.4:
                return self.finite("like", agr) + self.object_np(depth + 1)
            if r < 0.55:
                return [("would", "AUX"), ("like", "VERB"), ("to", "PART")] + self.bare_vp(
                    depth + 1)
            verb = self.pick(("look", "sound", "smell", "sing", "run", "work", "act"))
            return self.finite(verb, agr) + [("like", "ADP")] + self.object_np(
                depth + 1, allow_rel=False)

        def ditransitive() -> list[Tok]:
            verb = self.pick(("give", "send", "show", "bring", "sell", "mail", "hand", "lend"))
            toks = self.finite(verb, agr) + self.object_np(depth + 1, allow_rel=False)
            return toks + [("to", "ADP")] + self.object_np(depth + 1, allow_rel=False)

        def passive() -> list[Tok]:
            _, _, participle, _ = _verb_forms(self.pick(_TRANSITIVE))
            toks = [(self.be(agr, self.chance(0.6)), "AUX"), (participle, "VERB")]
            if self.chance(0.5):
                toks += [("by", "ADP")] + self.object_np(depth + 1, allow_rel=False)
            return toks

        def possession() -> list[Tok]:
            # main-verb have/do: VERB, unlike the auxiliaries
            verb = self.pick(("have", "have", "do"))
            return self.finite(verb, agr, self.pick(("present", "past"))) + self.object_np(
                depth + 1)

        table = [(30, transitive), (14, intransitive), (16, copula), (9, motion),
                 (6, like), (3, ditransitive), (4, passive), (6, possession)]
        if depth < 2:
            table += [(6, cognition), (7, desire)]
        toks = self.weighted(table)
        if self.chance(0.08):
            # frequency adverb before the verb group: "she often walks"
            return [(self.pick(_FREQUENCY_ADVERBS), "ADV")] + toks
        return toks

    def bare_vp(self, depth: int) -> list[Tok]:
        """An infinitive predicate without ``to``: "open the door", "run fast"."""
        r = self.rng.random()
        if r < 0.55:
            verb = self.pick(_ADJECTIVE_VERBS) if self.chance(0.1) else self.pick(_TRANSITIVE)
            return [(verb, "VERB")] + self.object_np(depth + 1)
        if r < 0.8:
            toks = [(self.pick(_INTRANSITIVE), "VERB")]
            return toks + self.adverbial(depth) if self.chance(0.5) else toks
        return [("be", "AUX")] + self.adjective()

    def clause(self, depth: int = 0) -> list[Tok]:
        if depth and self.chance(0.06):
            return self.existential_clause(depth)
        subject, agr = self.subject_np(depth)
        if self.chance(0.08) and subject[-1][0] in _CONTRACTED_BE:
            # contracted copula / progressive: "it 's cold", "they 're leaving"
            aux = [(_CONTRACTED_BE[subject[-1][0]], "AUX")]
            if self.chance(0.5):
                return subject + aux + self.adjective()
            verb = self.pick(_INTRANSITIVE)
            return subject + aux + [(_verb_forms(verb)[3], "VERB")]
        return subject + self.verb_phrase(agr, depth)

    # -- sentence templates -------------------------------------------------------------

    def declarative(self) -> list[Tok]:
        toks = self.clause()
        if self.chance(0.25):
            toks += self.adverbial(1)
        return toks + [(".", "PUNCT")]

    def yes_no_question(self) -> list[Tok]:
        subject, agr = self.subject_np(1)
        r = self.rng.random()
        if r < 0.4:
            aux = "Did" if self.chance(0.5) else ("Does" if self.third_singular(agr) else "Do")
            body = [(aux, "AUX")] + subject + [(self.pick(_TRANSITIVE), "VERB")]
            body += self.object_np(1)
        elif r < 0.7:
            body = [(self.be(agr, self.chance(0.4)).capitalize(), "AUX")] + subject
            body += self.adjective()
        else:
            modal = self.pick(("Can", "Could", "Will", "Should", "Would", "May"))
            body = [(modal, "AUX")] + subject + self.bare_vp(1)
        return body + [("?", "PUNCT")]

    def wh_question(self) -> list[Tok]:
        subject, agr = self.subject_np(1)
        aux = "did" if self.chance(0.6) else ("does" if self.third_singular(agr) else "do")
        r = self.rng.random()
        if r < 0.3:
            wh = [("What", "PRON")]
            body = [(aux, "AUX")] + subject + [(self.pick(_TRANSITIVE), "VERB")]
        elif r < 0.45:
            wh = [(self.pick(("Which", "What")), "DET"), (self.noun(), "NOUN")]
            body = [(aux, "AUX")] + subject + [(self.pick(_TRANSITIVE), "VERB")]
        elif r < 0.75:
            wh = [(self.pick(("Where", "When", "Why", "How")), "ADV")]
            body = [(aux, "AUX")] + subject + self.bare_vp(1)
        else:
            wh = [("Who", "PRON")]
            body = self.verb_phrase(_THIRD_SINGULAR, 1)
        return wh + body + [("?", "PUNCT")]

    def tag_question(self) -> list[Tok]:
        subject = self.pick(("it", "he", "she", "they", "you", "we"))
        _, person, plural = _PERSONAL[subject]
        agr = (person, plural)
        be = self.be(agr, self.chance(0.4))
        return ([(subject, "PRON"), (be, "AUX")] + self.adjective()
                + [(",", "PUNCT"), (be, "AUX"), ("n't", "PART"), (subject, "PRON"),
                   ("?", "PUNCT")])

    def imperative(self) -> list[Tok]:
        toks: list[Tok] = []
        r = self.rng.random()
        if r < 0.25:
            toks = [("please", "INTJ")]
        elif r < 0.4:
            toks = [("do", "AUX"), ("n't", "PART")]
        elif r < 0.55:
            toks = [("let", "VERB"), ("'s", "PRON")]
        toks += self.bare_vp(1)
        if r >= 0.55 and self.chance(0.2):
            toks += [(",", "PUNCT"), ("please", "INTJ")]
        return toks + [(self.pick((".", "!")), "PUNCT")]

    def interjection(self) -> list[Tok]:
        word = self.pick(_INTERJECTIONS)
        toks = [(word, "INTJ"), (self.pick((",", "!")), "PUNCT")]
        body = self.clause() + [(self.pick((".", "!")), "PUNCT")]
        if self.chance(0.15):
            body.insert(-1, (self.pick(_EMOTICONS), "SYM"))
        return toks + body

    def subordinate(self) -> list[Tok]:
        conj = self.pick(("because", "although", "if", "while", "since", "before", "after",
                          "until", "unless", "as", "once", "though", "whether", "when"))
        # UD English tags the clause-introducing "when" ADV (advmod), the others SCONJ (mark)
        tag = "ADV" if conj == "when" else "SCONJ"
        if conj == "whether":
            main = self.subject_np(1)
            verb = self.finite(self.pick(("know", "wonder", "ask")), main[1])
            return (main[0] + verb + [("whether", "SCONJ")] + self.clause(1)
                    + [(".", "PUNCT")])
        if self.chance(0.5):
            return (self.clause() + [(conj, tag)] + self.clause(1) + [(".", "PUNCT")])
        return ([(conj, tag)] + self.clause(1) + [(",", "PUNCT")] + self.clause(1)
                + [(".", "PUNCT")])

    def preposition_or_conjunction(self) -> list[Tok]:
        """The same word as ADP before a noun phrase, SCONJ before a clause."""
        word = self.pick(("before", "after", "since", "until", "as"))
        if word == "as" and self.chance(0.5):
            subject, agr = self.subject_np(1, animate=True)
            verb = self.finite(self.pick(("work", "start", "stand", "travel")), agr)
            return subject + verb + [("as", "ADP")] + self.common_np(plural=agr[1],
                                                                     animate=True)[0] + [
                (".", "PUNCT")]
        if self.chance(0.5):
            tail = self.object_np(1, allow_rel=False)
            if word != "as":
                tail = self.pick(([("the", "DET"), (self.pick(("meeting", "game", "storm",
                                  "party", "lesson", "war", "show", "match", "trip")), "NOUN")],
                                  [(self.pick(_WEEKDAYS + _MONTHS), "PROPN")], tail))
            return self.clause() + [(word, "ADP")] + tail + [(".", "PUNCT")]
        return self.clause() + [(word, "SCONJ")] + self.clause(1) + [(".", "PUNCT")]

    def coordination(self) -> list[Tok]:
        r = self.rng.random()
        if r < 0.6:
            conj = self.pick(("and", "but", "or", "and"))
            return (self.clause() + [(",", "PUNCT"), (conj, "CCONJ")] + self.clause(1)
                    + [(".", "PUNCT")])
        subject, agr = self.subject_np()
        if r < 0.8:
            verb = [(self.be(agr, self.chance(0.5)), "AUX")]
            return (subject + verb + self.adjective() + [(self.pick(("and", "but", "or")),
                    "CCONJ")] + self.adjective() + [(".", "PUNCT")])
        return (subject + self.verb_phrase(agr, 1) + [("and", "CCONJ")]
                + self.verb_phrase(agr, 1) + [(".", "PUNCT")])

    def existential(self) -> list[Tok]:
        return self.existential_clause(0) + [(".", "PUNCT")]

    def existential_clause(self, depth: int) -> list[Tok]:
        """"there is/are ..." with existential "there" as PRON."""
        plural = self.chance(0.4)
        past = self.chance(0.4)
        be = ("were" if plural else "was") if past else ("are" if plural else "is")
        there = [("there", "PRON"), (be, "AUX")]
        if not plural and not past and self.chance(0.3):
            there = [("there", "PRON"), ("'s", "AUX")]
        np_ = self.common_np(plural=plural, depth=depth + 1)[0]
        toks = there + np_ + [(self.pick(_PLACE_PREPOSITIONS[:12]), "ADP")]
        toks += self.object_np(depth + 1, allow_rel=False)
        if self.chance(0.2):
            toks += [("over", "ADV") if self.chance(0.3) else ("there", "ADV")]
        return toks

    def demonstrative(self) -> list[Tok]:
        """Standalone "that"/"this" as PRON next to its determiner uses."""
        word = self.pick(("that", "this", "that"))
        if self.chance(0.5):
            return ([(word, "PRON"), (self.pick(("is", "was")), "AUX")] + self.adjective()
                    + [(".", "PUNCT")])
        subject, agr = self.subject_np(1)
        return subject + self.finite(self.pick(("like", "want", "need", "know", "see", "hear",
                                                "remember", "mean")), agr) + [
            (word, "PRON"), (self.pick((".", "!")), "PUNCT")]

    def possessive_body(self) -> list[Tok]:
        """"back" as NOUN and possessive 's as PART."""
        subject, agr = self.subject_np(1, animate=True)
        if self.chance(0.5):
            return (subject + self.finite(self.pick(("hurt", "scratch", "wash", "touch")), agr,
                                          "past")
                    + [(self.pick(_POSSESSIVES), "PRON"),
                       (self.pick(("back", "back", "arm", "hand", "knee", "neck")), "NOUN"),
                       (".", "PUNCT")])
        owner = self.proper_noun()
        return (owner + [("'s", "PART"), (self.noun(), "NOUN"), (self.be(_THIRD_SINGULAR,
                self.chance(0.5)), "AUX")] + self.adjective() + [(".", "PUNCT")])

    def comparative(self) -> list[Tok]:
        subject, agr = self.subject_np(1)
        adjective, comparative = self.pick(list(_COMPARATIVES.items()))
        if self.chance(0.3):
            middle = [("more", "ADV"), (self.pick(_ADJECTIVES), "ADJ")]
        else:
            middle = [(comparative, "ADJ")]
        return (subject + [(self.be(agr, self.chance(0.4)), "AUX")] + middle
                + [("than", "ADP")] + self.object_np(1, allow_rel=False) + [(".", "PUNCT")])

    def numbers(self) -> list[Tok]:
        r = self.rng.random()
        if r < 0.3:
            subject, agr = self.subject_np(1)
            verb = self.finite(self.pick(("buy", "sell", "pay", "spend", "find", "win")), agr,
                               self.pick(("present", "past")))
            money = [("$", "SYM")] + self.amount() if self.chance(0.7) else self.number() + [
                (self.pick(("dollars", "euros", "pounds")), "NOUN")]
            return subject + verb + money + [(".", "PUNCT")]
        if r < 0.5:
            return ([(self.pick(("about", "almost", "only", "nearly")), "ADV")] + self.amount()
                    + [("%", "SYM"), ("of", "ADP"), ("the", "DET"),
                       (_plural(self.noun(animate=self.chance(0.5))), "NOUN"),
                       (self.be(_THIRD_PLURAL, self.chance(0.5)), "AUX")] + self.adjective()
                    + [(".", "PUNCT")])
        if r < 0.65:
            a, b = self.rng.randint(1, 20), self.rng.randint(1, 20)
            op, value = ("+", a + b) if self.chance(0.6) else ("-", a - b)
            return [(str(a), "NUM"), (op, "SYM"), (str(b), "NUM"), ("=", "SYM"),
                    (str(value), "NUM")]
        if r < 0.8:
            subject, _ = self.subject_np(1, animate=True)
            return subject + [("was", "AUX"), ("born", "VERB"), ("in", "ADP")] + self.pick(
                ([(str(self.rng.randint(1950, 2020)), "NUM")],
                 [(self.pick(_MONTHS), "PROPN")], self.place())) + [(".", "PUNCT")]
        subject, agr = self.subject_np(1)
        count = self.number()
        return (subject + self.finite(self.pick(_TRANSITIVE), agr, "past") + count
                + [(_plural(self.noun()), "NOUN"), ("on", "ADP"), (self.pick(_WEEKDAYS),
                   "PROPN"), (".", "PUNCT")])

    def quotation(self) -> list[Tok]:
        subject, agr = self.subject_np(1, animate=True)
        verb = self.finite(self.pick(("say", "whisper", "shout", "write")), agr, "past")
        foreign = [(word, "X") for word in self.pick(_FOREIGN)]
        return subject + verb + [('"', "PUNCT")] + foreign + [('"', "PUNCT"), (".", "PUNCT")]

    def listing(self) -> list[Tok]:
        subject, agr = self.subject_np(1)
        verb = self.finite(self.pick(("buy", "need", "want", "pack", "sell", "bring")), agr)
        items: list[Tok] = []
        for i in range(self.rng.randint(2, 4)):
            if i:
                items.append((",", "PUNCT"))
            items.append((_plural(self.noun()), "NOUN"))
        if self.chance(0.5):
            ending: list[Tok] = [(",", "PUNCT"), ("etc", "NOUN")]  # NOUN in UD English EWT
        else:
            ending = [(",", "PUNCT"), ("and", "CCONJ"), (_plural(self.noun()), "NOUN")]
        if self.chance(0.3):
            items = [("(", "PUNCT")] + items + ending + [(")", "PUNCT")]
            ending = []
        toks = subject + verb + items + ending
        if self.chance(0.2):
            toks += [(";", "PUNCT"), ("it", "PRON"), ("'s", "AUX"), ("fine", "ADJ")]
        return toks + [(".", "PUNCT")]

    def light_back_well(self) -> list[Tok]:
        """Templates centred on the most ambiguous forms."""
        r = self.rng.random()
        if r < 0.2:
            subject, agr = self.subject_np(1)
            return subject + self.finite("light", agr) + self.determiner(
                False, "c") + [(self.pick(("candle", "fire", "lamp", "match")), "NOUN"),
                               (".", "PUNCT")]
        if r < 0.35:
            return ([("the", "DET"), ("light", "NOUN"), (self.pick(("is", "was")), "AUX")]
                    + self.adjective() + [(".", "PUNCT")])
        if r < 0.5:
            subject, agr = self.subject_np(1, animate=True)
            return subject + self.finite(self.pick(("sing", "cook", "swim", "play", "work")),
                                         agr, "present") + [("well", "ADV"), (".", "PUNCT")]
        if r < 0.6:
            subject, agr = self.subject_np(1, animate=True)
            return subject + self.finite("feel", agr, self.pick(("present", "past"))) + [
                ("well", "ADJ"), (".", "PUNCT")]
        if r < 0.75:
            subject, agr = self.subject_np(1)
            return subject + self.finite("turn", agr, self.pick(("past", "present"))) + [
                (self.pick(("left", "right")), "ADV"), (".", "PUNCT")]
        if r < 0.85:
            return ([("open", "VERB"), ("the", "DET"), (self.pick(("back", "front")), "ADJ"),
                     (self.pick(("door", "gate", "window")), "NOUN"), (".", "PUNCT")])
        subject, agr = self.subject_np(1)
        return subject + self.finite(self.pick(("leave", "forget")), agr, "past") + self.pick(
            ([("the", "DET")], [("a", "DET")], [(self.pick(_POSSESSIVES), "PRON")])) + [
            ("can", "NOUN"), ("behind", "ADV"), (".", "PUNCT")]

    def sentence(self) -> list[Tok]:
        return self.weighted([
            (26, self.declarative), (6, self.yes_no_question), (6, self.wh_question),
            (2, self.tag_question), (5, self.imperative), (4, self.interjection),
            (8, self.subordinate), (6, self.preposition_or_conjunction),
            (7, self.coordination), (4, self.existential), (4, self.demonstrative),
            (3, self.possessive_body), (3, self.comparative), (5, self.numbers),
            (2, self.quotation), (3, self.listing), (5, self.light_back_well),
        ])


def _capitalise(tokens: list[Tok]) -> list[Tok]:
    form, tag = tokens[0]
    return [(form[:1].upper() + form[1:], tag)] + tokens[1:]


def generate_demo_corpus(n_sentences: int = 4000, *, seed: int = 0) -> list[Sentence]:
    """Generate the embedded UPOS-tagged demo corpus.

    Parameters
    ----------
    n_sentences : int, default 4000
        Number of sentences (at least 1).
    seed : int, default 0
        Seed of the ``random.Random`` that drives the grammar. The output depends only on
        ``(n_sentences, seed)``; the first *k* sentences do not depend on ``n_sentences``.

    Returns
    -------
    list of Sentence
        ``source`` is ``"demo:upos-grammar-v1"``, ``line`` the 1-based sentence index,
        ``sent_id`` ``"demo-{line}"``; labels are UPOS tags.

    Raises
    ------
    ValueError
        If ``n_sentences`` is not a positive integer.

    Examples
    --------
    >>> corpus = generate_demo_corpus(3)
    >>> len(corpus), corpus[0].source, corpus[0].sent_id
    (3, 'demo:upos-grammar-v1', 'demo-1')
    >>> corpus == generate_demo_corpus(3)
    True
    """
    if isinstance(n_sentences, bool) or not isinstance(n_sentences, int) or n_sentences < 1:
        raise ValueError(f"n_sentences must be a positive integer; got {n_sentences!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer; got {seed!r}.")
    grammar = _Grammar(random.Random(seed))
    sentences = []
    for index in range(1, n_sentences + 1):
        tokens = _capitalise(grammar.sentence())
        sentences.append(Sentence(
            tokens=tuple(form for form, _ in tokens),
            labels=tuple(tag for _, tag in tokens),
            source=DEMO_SOURCE,
            line=index,
            sent_id=f"demo-{index}",
        ))
    logger.debug("generated %d demo sentences (seed=%d)", n_sentences, seed)
    return sentences
