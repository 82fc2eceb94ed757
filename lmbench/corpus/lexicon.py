"""Word lists for the built-in corpus: the raw material the world and its texts are composed from.

Everything here was written for lmbench. Names are not listed: they are composed from the syllables
below by `world.py`, deterministically from a seed, so no real person, place or firm is named.
"""

# ----------------------------------------------------------------------------- name syllables
ONSETS = ("b", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
          "fr", "gr", "kr", "tr", "st", "th", "sh", "ch", "kl", "sl", "sv", "vr", "el", "al", "or", "an")
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ia", "ou", "y")
CODAS = ("", "", "", "n", "l", "r", "s", "m", "th", "nd", "rk", "st", "v", "d", "nt", "lm")
FEMALE_ENDINGS = ("a", "ia", "ine", "elle", "ra", "na", "eth", "is", "ey", "ana", "ette", "ila", "ora", "wen")
MALE_ENDINGS = ("an", "or", "ek", "us", "o", "in", "as", "ert", "ald", "en", "ric", "mir", "dor", "vin")
SURNAME_ENDINGS = ("berg", "son", "ova", "ski", "ley", "ton", "man", "ard", "mont", "vik", "well", "ford",
                   "holm", "dahl", "quist", "ez", "ini", "escu", "ak", "sen", "ens", "wick", "ay", "elli")
CITY_ENDINGS = ("mora", "vik", "holm", "burg", "ton", "ford", "grad", "stad", "port", "haven", "ora",
                "ane", "is", "ley", "mouth", "dale", "ence", "ovo", "aro", "ach", "wick", "enne")
COUNTRY_ENDINGS = ("ia", "land", "ora", "ania", "esh", "mark", "avia", "eria", "onia", "ar")
RIVER_ENDINGS = ("el", "ine", "ava", "ou", "is", "ent", "ara", "ow")
BRAND_ENDINGS = ("ix", "on", "ara", "el", "ent", "io", "ova", "us", "ex", "ant")

# ----------------------------------------------------------------------------- time and numbers
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
SEASONS = ("spring", "summer", "autumn", "winter")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve")
DIRECTIONS = ("north", "south", "east", "west", "northeast", "northwest", "southeast", "southwest",
              "centre")

# ----------------------------------------------------------------------------- professions
# (name, domain, industries it is employed in, two things the job involves)
PROFESSIONS = (
    ("engineer", "science", ("software", "energy", "automotive", "construction"), ("designs control systems",
                                                                                   "tests new machines")),
    ("teacher", "general", ("university", "publishing"), ("teaches history to older pupils",
                                                          "prepares lessons late into the evening")),
    ("nurse", "general", ("pharma",), ("looks after patients on the night shift", "trains younger colleagues")),
    ("architect", "arts", ("construction",), ("draws plans for public libraries", "restores old warehouses")),
    ("baker", "general", ("food", "retail"), ("starts work before dawn", "bakes rye bread and sweet rolls")),
    ("pilot", "travel", ("airline",), ("flies short routes along the coast", "trains new crews in the simulator")),
    ("journalist", "arts", ("media", "publishing"), ("writes about local politics", "interviews farmers and miners")),
    ("lawyer", "business", ("banking", "insurance"), ("handles contract disputes", "advises small firms")),
    ("chemist", "science", ("pharma", "university", "mining"), ("studies new catalysts",
                                                                "measures impurities in water")),
    ("painter", "arts", ("theatre", "media"), ("paints large landscapes", "teaches evening classes in drawing")),
    ("composer", "arts", ("theatre", "film"), ("writes music for string quartets", "scores films and plays")),
    ("carpenter", "general", ("construction",), ("builds staircases and cabinets", "repairs old roofs")),
    ("farmer", "general", ("agriculture", "food"), ("grows barley and potatoes", "keeps a small herd of goats")),
    ("surgeon", "science", ("pharma", "university"), ("operates on injured knees", "leads a team of twelve")),
    ("librarian", "arts", ("university", "publishing"), ("catalogues rare maps", "runs a reading club for children")),
    ("economist", "business", ("banking", "university", "insurance"), ("forecasts prices and wages",
                                                                       "studies regional trade")),
    ("photographer", "arts", ("media", "publishing"), ("photographs weddings and harbours",
                                                       "works for several magazines")),
    ("novelist", "arts", ("publishing",), ("writes long family sagas", "publishes a book every few years")),
    ("actor", "arts", ("theatre", "film"), ("appears in stage comedies", "plays villains on screen")),
    ("singer", "arts", ("theatre", "media"), ("sings in a folk band", "performs in small concert halls")),
    ("translator", "arts", ("publishing", "media"), ("translates novels and poems", "interprets at trade meetings")),
    ("accountant", "business", ("banking", "retail", "insurance"), ("prepares annual accounts",
                                                                    "checks invoices and payrolls")),
    ("electrician", "general", ("construction", "energy"), ("wires new houses", "repairs street lights")),
    ("biologist", "science", ("university", "pharma", "agriculture"), ("studies river fish",
                                                                       "counts birds in the marshes")),
    ("astronomer", "science", ("university",), ("observes distant comets", "measures the light of variable stars")),
    ("geologist", "science", ("mining", "university", "energy"), ("maps rock layers in the hills",
                                                                  "searches for copper deposits")),
    ("mathematician", "science", ("university", "software"), ("works on number theory", "models traffic flows")),
    ("pharmacist", "science", ("pharma", "retail"), ("prepares medicines", "advises patients about side effects")),
    ("veterinarian", "science", ("agriculture",), ("treats horses and cattle", "runs a small animal clinic")),
    ("chef", "travel", ("hospitality", "food"), ("cooks seasonal fish dishes", "runs a busy kitchen")),
    ("tailor", "arts", ("textiles", "retail"), ("makes suits to measure", "alters wedding dresses")),
    ("sculptor", "arts", ("theatre", "construction"), ("carves figures from marble", "casts bronze statues")),
    ("dancer", "arts", ("theatre",), ("performs with a modern dance company", "teaches ballet to children")),
    ("historian", "science", ("university", "publishing"), ("studies medieval trade routes",
                                                            "writes about old port towns")),
    ("programmer", "science", ("software", "telecom", "banking"), ("writes code for payment systems",
                                                                   "maintains a large database")),
    ("designer", "arts", ("textiles", "software", "electronics"), ("designs furniture and lamps",
                                                                   "sketches new product ideas")),
    ("mechanic", "general", ("automotive", "airline"), ("repairs engines", "services delivery vans")),
    ("sailor", "travel", ("shipping",), ("crews cargo ships", "spends months at sea")),
    ("gardener", "general", ("hospitality", "agriculture"), ("tends public gardens", "grows rare roses")),
    ("editor", "arts", ("publishing", "media"), ("edits a weekly magazine", "chooses which stories to print")),
    ("banker", "business", ("banking",), ("manages loans to farmers", "advises large clients")),
    ("consultant", "business", ("software", "energy", "retail"), ("advises firms on strategy",
                                                                  "travels to meet clients")),
    ("analyst", "business", ("banking", "insurance", "telecom"), ("studies market data",
                                                                  "writes reports on share prices")),
    ("physicist", "science", ("university", "energy"), ("studies magnetic materials",
                                                        "builds lasers in the laboratory")),
    ("linguist", "science", ("university", "publishing"), ("records rare dialects",
                                                           "studies how children learn words")),
    ("curator", "arts", ("theatre", "university"), ("organises exhibitions", "looks after a collection of prints")),
    ("potter", "arts", ("retail",), ("makes bowls and vases", "fires a wood kiln")),
    ("brewer", "business", ("food",), ("brews dark ales", "tests new recipes for beer")),
    ("florist", "general", ("retail",), ("arranges flowers for weddings", "runs a stall at the market")),
    ("courier", "general", ("shipping", "retail"), ("delivers parcels by bicycle", "knows every street in town")),
    ("footballer", "sports", ("club",), ("plays as a striker", "trains every morning")),
    ("runner", "sports", ("club",), ("competes in long distance races", "trains on mountain trails")),
    ("swimmer", "sports", ("club",), ("swims the butterfly", "trains in an outdoor pool")),
    ("cyclist", "sports", ("club",), ("races on mountain roads", "rides hundreds of kilometres a week")),
    ("coach", "sports", ("club",), ("coaches the youth team", "plans training sessions")),
    ("goalkeeper", "sports", ("club",), ("guards the goal", "is known for saving penalties")),
    ("manager", "business", ("retail", "hospitality", "food", "textiles"), ("runs a team of forty",
                                                                            "manages a large warehouse")),
    ("receptionist", "travel", ("hospitality",), ("greets guests at a hotel", "books tours for visitors")),
    ("guide", "travel", ("hospitality",), ("leads walking tours", "shows visitors the old town")),
    ("miner", "general", ("mining",), ("works deep underground", "operates heavy drills")),
)

HOBBIES = ("playing chess", "growing tomatoes", "sailing", "baking bread", "hiking in the hills",
           "painting watercolours", "playing the violin", "fishing", "collecting stamps", "cycling",
           "reading detective novels", "running", "knitting", "birdwatching", "cooking spicy food",
           "restoring old clocks", "swimming in the lake", "writing poems", "playing the piano",
           "gardening", "climbing", "dancing", "photography", "woodworking", "learning languages",
           "keeping bees", "playing football", "watching old films", "making pottery", "singing in a choir")

# ----------------------------------------------------------------------------- organisations
# industry -> (name suffixes, things it makes or does)
INDUSTRIES = {
    "software": (("Systems", "Software", "Labs", "Digital"), ("accounting software", "mobile apps", "database tools",
                                                              "video games")),
    "banking": (("Bank", "Capital", "Finance", "Savings"), ("loans to small firms", "savings accounts", "mortgages")),
    "insurance": (("Insurance", "Assurance", "Mutual"), ("home insurance", "travel insurance", "crop insurance")),
    "food": (("Foods", "Bakeries", "Dairy", "Kitchens"), ("bread", "cheese", "frozen meals", "biscuits",
                                                          "canned fish")),
    "shipping": (("Shipping", "Logistics", "Freight", "Lines"), ("cargo transport", "container shipping",
                                                                 "river barges")),
    "energy": (("Energy", "Power", "Solar", "Grid"), ("wind turbines", "electricity", "solar panels")),
    "mining": (("Mining", "Minerals", "Resources"), ("copper", "iron ore", "salt", "granite")),
    "pharma": (("Pharma", "Therapeutics", "Medical"), ("vaccines", "painkillers", "medical devices")),
    "media": (("Media", "Broadcasting", "Radio"), ("news programmes", "radio shows", "podcasts")),
    "publishing": (("Press", "Books", "Publishing"), ("novels", "school textbooks", "magazines")),
    "film": (("Pictures", "Studios", "Films"), ("feature films", "documentaries", "animated films")),
    "airline": (("Air", "Airways", "Aviation"), ("regional flights", "air cargo", "charter flights")),
    "textiles": (("Textiles", "Mills", "Fabrics"), ("wool", "cotton shirts", "carpets")),
    "construction": (("Construction", "Builders", "Engineering"), ("bridges", "apartment blocks", "roads")),
    "telecom": (("Telecom", "Networks", "Connect"), ("mobile networks", "broadband", "undersea cables")),
    "agriculture": (("Farms", "Agro", "Growers"), ("grain", "apples", "fertiliser", "seed potatoes")),
    "automotive": (("Motors", "Automotive", "Vehicles"), ("electric cars", "trucks", "bicycles", "scooters")),
    "hospitality": (("Hotels", "Resorts", "Hospitality"), ("hotels", "holiday resorts", "guest houses")),
    "retail": (("Stores", "Market", "Retail"), ("groceries", "clothing", "furniture")),
    "electronics": (("Electronics", "Devices", "Instruments"), ("phones", "cameras", "laptops", "speakers")),
    "appliances": (("Appliances", "Home", "Household"), ("kettles", "blenders", "washing machines", "toasters")),
    "theatre": (("Theatre", "Ensemble", "Orchestra"), ("stage plays", "concerts", "operas")),
}
CLUB_SUFFIXES = ("Rovers", "United", "Athletic", "Wanderers", "Falcons", "Rangers", "City", "Harriers")
SPORTS = ("football", "handball", "basketball", "hockey", "volleyball", "rugby")

# ----------------------------------------------------------------------------- places
LANDMARKS = ("the old cathedral", "a stone bridge", "the fish market", "a clock tower", "the botanical garden",
             "the royal palace", "a lighthouse", "the city museum", "an open air theatre", "the old harbour",
             "a ruined castle", "the central station", "a covered market", "the town hall", "a sculpture park",
             "the university library", "a hill fortress", "the flower market", "an ancient bath house",
             "the opera house")
KNOWN_FOR = ("its textile mills", "fishing", "its vineyards", "glassmaking", "its annual lantern parade",
             "its cheese", "shipbuilding", "its hot springs", "silver mining", "its jazz clubs",
             "its universities", "its harbour", "its spicy sausages", "salt production", "its painted houses",
             "its bicycle lanes", "clockmaking", "its mountain views", "its night markets", "olive oil")
CLIMATES = ("mild winters and warm summers", "long, cold winters", "hot, dry summers", "heavy rain in autumn",
            "fog for much of the year", "a windy coastal climate", "snow from November to March")
SIZE_WORDS = ("small", "busy", "quiet", "large", "old", "lively", "historic", "growing")
CUISINES = ("seafood", "vegetarian", "mountain", "street", "noodle", "grill", "bakery", "spicy", "family style")
DISHES = ("fish stew", "lamb skewers", "mushroom soup", "fried dumplings", "plum cake", "grilled trout",
          "bean salad", "pepper bread", "roast duck", "honey pastries", "lentil curry", "smoked cheese")

# ----------------------------------------------------------------------------- works and products
TITLE_ADJECTIVES = ("Silent", "Hidden", "Broken", "Golden", "Distant", "Last", "Quiet", "Burning", "Frozen",
                    "Lonely", "Crimson", "Narrow", "Endless", "Northern", "Paper", "Glass", "Iron", "Wild",
                    "Bright", "Hollow", "Summer", "Winter", "Second", "Secret", "Salt", "Velvet", "Sleeping")
TITLE_NOUNS = ("Harbour", "Garden", "River", "Letter", "Orchard", "Lantern", "Mirror", "Station", "Kingdom",
               "Island", "Voyage", "Tide", "House", "Bridge", "Promise", "Shadow", "Forest", "Crown", "Window",
               "Song", "Storm", "Field", "Road", "Tower", "Thread", "Map", "Clock", "Valley", "Stranger", "Sister")
WORK_KINDS = {  # kind -> (creator professions, genres, creator verb)
    "film": (("actor", "composer", "photographer", "novelist"), ("drama", "comedy", "thriller", "science fiction",
                                                                 "documentary", "war", "romance", "horror"),
                                                                 "directed by"),
    "book": (("novelist", "historian", "journalist", "translator"), ("crime", "historical", "fantasy", "travel",
                                                                     "romance", "poetry", "mystery"), "written by"),
    "album": (("singer", "composer", "dancer"), ("folk", "jazz", "pop", "rock", "classical", "electronic"),
              "recorded by"),
}
PRODUCT_KINDS = {  # category -> (maker industries, aspects)
    "phone": (("electronics", "telecom"), ("battery", "screen", "camera", "price", "design")),
    "laptop": (("electronics", "software"), ("keyboard", "battery", "screen", "fan", "price")),
    "camera": (("electronics",), ("lens", "autofocus", "menu", "battery", "grip")),
    "kettle": (("appliances",), ("handle", "lid", "switch", "price", "design")),
    "blender": (("appliances",), ("motor", "blade", "jug", "noise level", "price")),
    "bicycle": (("automotive",), ("frame", "braking", "gear shifting", "saddle", "price")),
    "speaker": (("electronics",), ("sound", "bass", "battery", "design", "price")),
    "coffee machine": (("appliances",), ("milk frother", "water tank", "design", "coffee", "price")),
    "scooter": (("automotive",), ("battery", "braking", "motor", "suspension", "price")),
    "tablet": (("electronics", "software"), ("screen", "battery", "sound", "software", "price")),
}
MODEL_WORDS = ("Aero", "Nova", "Pulse", "Mini", "Pro", "Lite", "Max", "Edge", "Core", "Wave", "Spark", "One")

# ----------------------------------------------------------------------------- sentiment
POSITIVE_WORDS = ("good", "great", "excellent", "wonderful", "superb", "delightful", "charming", "brilliant",
                  "lovely", "enjoyable", "fantastic", "memorable", "impressive", "pleasant", "terrific",
                  "outstanding", "moving", "fresh", "generous", "warm")
NEGATIVE_WORDS = ("bad", "awful", "terrible", "boring", "dull", "disappointing", "tedious", "poor", "weak",
                  "bland", "clumsy", "forgettable", "mediocre", "dreadful", "painful", "messy", "flat",
                  "cold", "lazy", "tiresome")
STRONG_POSITIVE = ("great", "excellent", "wonderful", "superb", "brilliant", "fantastic", "outstanding")
STRONG_NEGATIVE = ("awful", "terrible", "dreadful", "painful", "bad", "boring")
INTENSIFIERS = ("", "", "", "really ", "very ", "truly ", "quite ", "rather ", "genuinely ", "simply ")
ASPECTS = {
    "film": ("acting", "plot", "script", "soundtrack", "pacing", "camera work", "ending", "dialogue", "direction",
             "cast"),
    "book": ("prose", "main character", "plot", "ending", "pacing", "dialogue", "first chapter", "translation",
             "cover"),
    "album": ("singing", "songwriting", "production", "opening track", "guitar work", "melody", "rhythm section",
              "last song"),
    "restaurant": ("food", "service", "soup", "dessert", "coffee", "wine list", "bread", "portion size", "atmosphere",
                   "menu"),
}

# ----------------------------------------------------------------------------- topical vocabulary
SCIENCE_FIELDS = ("physics", "chemistry", "biology", "astronomy", "geology", "mathematics", "linguistics",
                  "medicine", "ecology", "materials science", "computer science", "archaeology")
SCIENCE_SUBJECTS = ("soil bacteria", "river sediment", "migrating birds", "coastal storms", "crystal growth",
                    "protein folding", "ancient pottery", "dialect change", "prime numbers", "solar flares",
                    "glacier melt", "bee colonies", "volcanic ash", "sleep patterns", "deep sea worms",
                    "magnetic alloys", "wheat roots", "city noise", "tree rings", "ocean currents")
SCIENCE_CHANGES = ("grow faster", "change more slowly", "behave differently", "become more stable",
                   "lose energy", "spread further", "recover more quickly", "react more strongly")
SCIENCE_CONDITIONS = ("when the temperature rises", "in salty water", "under strong light", "at high altitude",
                      "after heavy rain", "in the presence of iron", "during long winters", "at night",
                      "when food is scarce", "near busy roads")
SCIENCE_METHODS = ("collected samples over three years", "built a new kind of sensor",
                   "compared records from twelve sites", "ran thousands of computer simulations",
                   "used a small satellite", "measured changes every hour", "studied old archives",
                   "interviewed hundreds of families")
BUSINESS_EVENTS = ("reported record profits", "announced a merger", "opened a new factory", "cut hundreds of jobs",
                   "signed a large contract", "raised its prices", "entered a new market",
                   "launched a new product line", "reported a loss", "paid a higher dividend")
BUSINESS_WORDS = ("revenue", "profit", "sales", "exports", "investment", "orders")
MATCH_VERBS_WIN = ("beat", "defeated", "overcame", "edged past", "thrashed")
MATCH_MOMENTS = ("a header in the final minute", "a long shot from outside the box", "a penalty after half-time",
                 "a quick counter attack", "a corner in stoppage time", "a fine solo run")
TRAVEL_TIPS = ("take the early ferry", "book a table in advance", "walk along the river at sunset",
               "buy a day ticket for the trams", "visit the market on Saturday", "avoid the main square at noon",
               "try the local pastries", "rent a bicycle", "carry an umbrella", "climb the hill for the view")

PROFESSION_TABLE = {p[0]: p[1:] for p in PROFESSIONS}  # job -> (domain, industries, duties)
