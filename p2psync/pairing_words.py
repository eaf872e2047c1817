"""The fixed list of 256 pairing-code words (pure data).

Each word carries 8 bits of a pairing code's secret. The list is part of the pairing protocol:
changing, adding or removing a word breaks pairing between versions, so it never changes within
`p2psync-pair-v1`. Every two words differ by at least 3 edits (insertions, deletions,
substitutions or swaps of adjacent letters), so a single typo can never turn one word into another
valid word (it would silently burn the code) and always has exactly one nearest word to suggest.
Words are lowercase ASCII, 3-7 letters, common, without homophones or offensive meanings.
"""

_WORDS_TEXT = """
acorn airport almond amber anchor apple atlas bamboo banana banjo basil birch biscuit bison
blanket blender bottle branch bread breeze bridge bright broom brush butter cabbage cabin cactus
calf camera canary canvas caramel carrot cashew castle cedar celery cello chair cheese cherry
circus clever cliff cloud cocoa coconut coffee comet compass cookie cottage cotton coyote cozy
crab crayon crimson crown crystal daisy dance dawn denim dolphin domino donkey drill drum dust
eagle emerald engine falcon feather flute folder forest frame frog fudge fuzzy galaxy garden
garlic gecko gentle ginger giraffe glacier glass goose guitar hamster harbor helmet hippo
holiday hornet humble husky iceberg indigo island ivory jaguar jazz jolly journey juice jungle
ketchup kiwi koala ladder lantern leaf legend lettuce library lizard llama lobster lotus loyal
magnet mammoth marble marsh meadow melon meteor milk mirror mitten moss mud muffin museum music
mustard needle ocean office olive onion opera orange orbit orchid ostrich palace pancake panther
parsley party peach peanut pebble pelican pencil penguin pepper photo piano pickle picnic pigeon
pillow pixel pizza poem popcorn potato pretzel pumpkin puppy puzzle python rabbit raccoon radish
rainbow raisin raven ribbon riddle rope ruby ruler salad sandal scarlet school sheep shovel
shrimp signal silver skate slipper sloth smoke snow sock spark sparrow spider sponge spoon
squash squid stamp station sunny sunset sushi swift syrup taco teapot temple tent thunder tidy
toast tofu topaz toucan trophy trout trumpet tulip turkey turtle twig valley vanilla village
violet volcano voyage waffle walrus wasp wheat whistle window witty wombat wool wren yogurt
zebra zesty
"""

WORDS: tuple[str, ...] = tuple(_WORDS_TEXT.split())
