"""Hand-written topic lists and request templates for the laptop-scale prompt set (UltraChat-like first turns).

`make_prompts(seed)` combines them deterministically; the build script writes train/test files from it.
Some templates contain words of the word-collector list W (provide, example, your, best, help, ...), most do not,
so the constrained task's prompt penalty varies across prompts.
"""

import random

COOKING = [
    "banana bread", "a vegetable curry", "homemade pizza dough", "a quick weeknight pasta", "chocolate chip cookies",
    "a Greek salad", "French onion soup", "sourdough bread", "scrambled eggs", "a tofu stir-fry", "guacamole",
    "fluffy pancakes", "lentil soup", "a roast chicken", "a fruit smoothie", "apple pie", "fried rice",
    "a black bean burger", "mashed potatoes", "a simple tomato sauce", "hummus", "a cheese omelette",
    "grilled salmon", "a chickpea salad", "brownies", "chicken noodle soup", "mushroom risotto", "fish tacos",
    "homemade granola", "beef chili", "pad thai", "a lemon cake", "vegetable dumplings", "overnight oats",
]
COOKING_T = [
    "Give me a simple recipe for {t}.",
    "How do I make {t} at home?",
    "What are the most common mistakes people make when cooking {t}?",
    "Can you provide a recipe for {t} that is easy for beginners?",
    "What ingredients do I need to make {t}?",
    "What is the best way to store leftover {t}?",
    "How can I make {t} a bit healthier?",
    "Write a short blog post about your favorite way to prepare {t}.",
    "I am cooking {t} for guests tonight. Any tips?",
    "How long does it take to make {t}, and what equipment do I need?",
]

TRAVEL = [
    "Paris", "Tokyo", "Iceland", "New York City", "the Scottish Highlands", "Barcelona", "Kyoto", "Cape Town",
    "Peru", "Rome", "the Grand Canyon", "Vietnam", "Lisbon", "Morocco", "New Zealand", "Prague", "Bali",
    "Istanbul", "Mexico City", "Norway", "Costa Rica", "Amsterdam", "Egypt", "Vancouver", "Seoul",
    "the Swiss Alps", "Buenos Aires", "Sicily", "Copenhagen", "Yellowstone National Park",
]
TRAVEL_T = [
    "What are the top things to see in {t}?",
    "Plan a three-day trip to {t} for a family with two kids.",
    "What should I pack for a trip to {t}?",
    "Is it safe to travel to {t} alone?",
    "What is the best time of year to visit {t}?",
    "Write a short travel guide for first-time visitors to {t}.",
    "What local foods should I try in {t}?",
    "How can I visit {t} on a small budget?",
    "Describe a perfect day in {t}.",
    "What is the history behind {t} that tourists should know about?",
]

SCIENCE = [
    "photosynthesis", "black holes", "the water cycle", "plate tectonics", "DNA replication", "climate change",
    "the greenhouse effect", "quantum entanglement", "natural selection", "the immune system", "vaccines",
    "gravity", "electricity", "the speed of light", "volcanoes", "the human brain", "antibiotics",
    "renewable energy", "nuclear fusion", "the periodic table", "the theory of relativity", "ocean tides",
    "earthquakes", "the solar system", "cell division", "evolution", "magnetism", "the carbon cycle",
    "sound waves", "rainbows", "the Big Bang", "bacteria and viruses", "coral reefs", "the ozone layer",
]
SCIENCE_T = [
    "Explain {t} in simple terms.",
    "Can you help me understand {t}?",
    "What is the most important thing to know about {t}?",
    "Describe {t} to a ten-year-old.",
    "What are two common misconceptions about {t}?",
    "Give an example that shows how {t} works.",
    "Write a short paragraph explaining {t} for a school report.",
    "What do scientists still not know about {t}?",
    "How did researchers learn about {t}?",
    "Why should ordinary people care about {t}?",
    "Summarize what we know about {t} in five sentences.",
]

HISTORY = [
    "the French Revolution", "the Roman Empire", "the Industrial Revolution", "the printing press",
    "World War I", "the Cold War", "the Renaissance", "ancient Egypt", "the civil rights movement",
    "the fall of the Berlin Wall", "the Silk Road", "the Apollo moon landing", "the Ming dynasty",
    "the invention of the telephone", "the Black Death", "the Aztec Empire", "the Great Depression",
    "the Magna Carta", "the Viking age", "the abolition of slavery", "ancient Greece", "the Meiji Restoration",
    "the early internet", "the Ottoman Empire", "the Protestant Reformation", "the Mongol Empire",
    "the age of exploration", "the women's suffrage movement",
]
HISTORY_T = [
    "What were the main causes of {t}?",
    "Summarize {t} in a few sentences.",
    "How did {t} change everyday life?",
    "What can we learn today from {t}?",
    "Write a short essay about the impact of {t}.",
    "Who were the most important people in {t}?",
    "What is a common myth about {t}?",
    "Can you provide some information about {t}?",
    "Explain {t} as if you were a history teacher.",
    "What happened during {t}, and why does it still matter?",
]

CODE_TASKS = [
    "a Python function that reverses a string", "a JavaScript function that checks if a number is prime",
    "a SQL query that finds duplicate rows in a table", "a bash script that renames all files in a folder",
    "a Python class for a simple bank account", "a function that sorts a list of dictionaries by a key",
    "a regular expression that matches email addresses", "a simple web server in Python",
    "a binary search in C", "a Python script that counts words in a text file",
    "a function that merges two sorted lists", "a JavaScript snippet that fetches JSON from an API",
    "a Python program that plays rock paper scissors", "a function that computes Fibonacci numbers",
    "a command-line calculator in Python", "an HTML page with a contact form",
    "a Python function that removes duplicates from a list", "a CSS rule that centers a div",
]
CODE_TASKS_T = [
    "Write {t}.",
    "Can you write {t} and explain how it works?",
    "Show me an example of {t}.",
    "I need {t}. Please keep it short and add comments.",
    "Write the code for {t} and give an example of how to use it.",
    "What is the cleanest way to write {t}?",
]

TECH = [
    "recursion", "object-oriented programming", "version control with Git", "unit testing", "REST APIs",
    "relational databases", "machine learning", "cloud computing", "big O notation", "hash tables",
    "multithreading", "memory leaks", "Docker containers", "functional programming", "cybersecurity",
    "public key encryption", "neural networks", "open source software", "agile development",
    "blockchain technology", "password managers", "smart home devices", "5G networks", "search engines",
    "spreadsheets", "data privacy", "computer viruses", "the cloud storage of photos",
]
TECH_T = [
    "What is {t} and why does it matter?",
    "Explain {t} with a simple example.",
    "What are the pros and cons of {t}?",
    "How should a beginner start learning about {t}?",
    "What are the best resources to learn about {t}?",
    "Write a short introduction to {t} for a non-technical reader.",
    "What are the risks of {t}?",
    "How has {t} changed in the last ten years?",
]

HEALTH = [
    "getting better sleep", "reducing stress", "starting to run", "drinking enough water", "building muscle",
    "eating more vegetables", "lowering blood pressure", "managing back pain", "staying active at a desk job",
    "cutting down on sugar", "improving posture", "meditation", "yoga for beginners", "healthy snacking",
    "eating a balanced breakfast", "intermittent fasting", "avoiding colds in winter", "keeping my heart healthy",
    "stretching after exercise", "reducing eye strain from screens", "walking every day", "losing weight slowly",
    "staying hydrated during sports", "mental health at work",
]
HEALTH_T = [
    "What are some tips for {t}?",
    "Give me a one-week plan for {t}.",
    "What does the research say about {t}?",
    "I have been struggling with {t}. What should I do?",
    "What are the benefits of {t}?",
    "What are the main myths about {t}?",
    "How do I get started with {t} if I am very busy?",
    "Write a motivational message for someone who is working on {t}.",
]

MONEY = [
    "saving for retirement", "creating a monthly budget", "paying off credit card debt", "investing in index funds",
    "buying a first home", "building an emergency fund", "negotiating a salary", "starting a small business",
    "choosing a bank account", "saving money on groceries", "improving a credit score", "paying for college",
    "investing in cryptocurrency", "starting a side hustle", "planning for taxes", "buying a used car",
    "tracking daily expenses", "lending money to friends",
]
MONEY_T = [
    "What is your advice on {t}?",
    "Explain the basics of {t}.",
    "What are the first steps in {t}?",
    "What mistakes do people make when {t}?",
    "I am twenty-five. How should I think about {t}?",
    "Give me a checklist for {t}.",
    "What questions should I ask before {t}?",
]

EVERYDAY = [
    "keeping houseplants alive", "organizing a small closet", "cleaning a cast iron pan", "training a puppy",
    "learning a new language", "making friends in a new city", "preparing for a job interview",
    "writing a good resume", "staying productive at home", "waking up early", "reducing food waste",
    "caring for an older cat", "planning a birthday party", "moving to a new apartment", "growing tomatoes",
    "studying for exams", "public speaking", "managing my time", "dealing with a difficult coworker",
    "recycling at home", "learning to play the guitar", "teaching a child to ride a bike", "decluttering a garage",
    "choosing a good laptop", "writing a wedding speech", "keeping a journal", "starting a vegetable garden",
    "painting a room", "fixing a leaking faucet", "getting kids to read more",
]
EVERYDAY_T = [
    "Do you have any advice on {t}?",
    "What is a step-by-step guide to {t}?",
    "What are five tips for {t}?",
    "My friend asked me about {t}. What should I tell them?",
    "How can I get better at {t}?",
    "What should I avoid when {t}?",
    "Help me make a plan for {t}.",
    "Why do so many people find {t} hard?",
    "What tools or supplies do I need for {t}?",
]

WRITING_SUBJECTS = [
    "the ocean", "autumn leaves", "a lonely robot", "a rainy day in the city", "friendship",
    "the first snow of winter", "a lost cat", "the moon", "coffee in the morning", "a summer festival",
    "a mountain village", "an old library", "a dragon who is afraid of fire", "time travel", "a garden at night",
    "a long train journey", "a grandmother's kitchen", "the last day of school", "a lighthouse keeper",
    "a city after the rain",
]
WRITING_T = [
    "Write a short poem about {t}.",
    "Write a haiku about {t}.",
    "Write a short story about {t}.",
    "Write a children's story about {t} with a happy ending.",
    "Write a song chorus about {t}.",
    "Describe {t} in vivid detail.",
    "Write the first paragraph of a novel about {t}.",
]

WRITING_TASKS = [
    "Write a thank-you note to a teacher who helped me.",
    "Write an email to my manager asking for a day off next Friday.",
    "Write a product description for a reusable water bottle.",
    "Write a product description for a pair of noise-cancelling headphones.",
    "Write a cover letter for a job as a barista.",
    "Write a cover letter for a junior software developer position.",
    "Write a short speech for my sister's graduation.",
    "Write a polite complaint to a hotel about a noisy room.",
    "Write a birthday message for my best friend.",
    "Write an apology to a neighbor for a loud party.",
    "Write a LinkedIn post announcing a new job.",
    "Write a short review of a pizza restaurant.",
    "Write a welcome message for new members of a book club.",
    "Write a short bio for a freelance photographer.",
    "Write an invitation to a summer barbecue.",
    "Write a letter to my future self.",
    "Write a short advertisement for a local bakery.",
    "Write a text message to cancel a dinner reservation.",
    "Write a short toast for a friend's wedding.",
    "Write a note to a coworker who is leaving the company.",
    "Write a list of rules for a shared apartment kitchen.",
    "Write a short description of a cozy cabin for a rental website.",
    "Write a motivational quote and explain what it means.",
    "Write a short dialogue between a customer and a shop assistant.",
    "Write a short newsletter update for a school.",
    "Write an announcement that the office will be closed on Monday.",
    "Write a poem for Mother's Day.",
    "Write a limerick about a clumsy cat.",
    "Write a short persuasive paragraph about why people should read more.",
    "Write a tweet about the importance of voting.",
]

PAIRS = [
    ("cats", "dogs as pets"), ("tea", "coffee"), ("electric cars", "gasoline cars"), ("renting", "buying a home"),
    ("Python", "JavaScript"), ("paper books", "audiobooks"), ("living in the city", "living in the countryside"),
    ("running", "swimming"), ("online classes", "in-person classes"), ("iPhones", "Android phones"),
    ("solar power", "wind power"), ("stocks", "bonds"), ("trains", "planes for travel in Europe"),
    ("working from home", "working in an office"), ("a gas stove", "an induction stove"),
    ("public schools", "private schools"), ("Spanish", "French as a second language"), ("Mac", "Windows"),
    ("fiction", "nonfiction"), ("a gym membership", "working out at home"), ("butter", "olive oil"),
    ("credit cards", "debit cards"), ("camping", "staying in a hotel"), ("email", "instant messaging at work"),
]
PAIRS_T = [
    "Compare {a} and {b}.",
    "What are the main differences between {a} and {b}?",
    "Which is better, {a} or {b}, and why?",
    "Write a short comparison of {a} and {b} for a blog.",
    "What are the pros and cons of {a} versus {b}?",
]

# Stand-alone first turns (everyday questions that fit no template).
SINGLES = [
    "Why is the sky blue?",
    "How do airplanes stay in the air?",
    "What is the difference between weather and climate?",
    "Why do we dream?",
    "How many hours of sleep does a teenager need?",
    "What is inflation and why do prices go up?",
    "How does a credit card work?",
    "Why do leaves change color in the fall?",
    "How do I tie a tie?",
    "What is the meaning of the word serendipity?",
    "Can you recommend some classic novels to read?",
    "What are some fun things to do on a rainy weekend?",
    "How do I stop procrastinating?",
    "What are good questions to ask on a first date?",
    "What is the tallest mountain in the world?",
    "How do bees make honey?",
    "What causes the seasons on Earth?",
    "How do I change a flat tire?",
    "What is a good way to learn math as an adult?",
    "How can I be more confident when speaking in meetings?",
    "What are some easy houseplants for beginners?",
    "How does the stock market work?",
    "What are the health benefits of green tea?",
    "Can you suggest a name for my new bakery?",
    "What games can I play with my kids at home?",
    "How do I write a good thesis statement?",
    "What is the best way to memorize vocabulary?",
    "Why is exercise good for the brain?",
    "How does a refrigerator keep food cold?",
    "What should I do if I feel lonely?",
    "Tell me a fun fact about octopuses.",
    "How do noise-cancelling headphones work?",
    "What are some simple ways to save energy at home?",
    "Why do cats purr?",
    "What is the difference between a virus and a bacterium?",
    "How do I make my small apartment feel bigger?",
    "What are the rules of chess for a complete beginner?",
    "How does the internet actually work?",
    "Give me ideas for a science fair project.",
    "What is mindfulness and how do I practice it?",
    "How can I reduce my plastic use?",
    "Why do onions make you cry?",
    "What is the best way to learn to type faster?",
    "How do vaccines train the immune system?",
    "Explain how a bill becomes a law in the United States.",
    "What makes a good leader?",
    "How do I keep my data safe online?",
    "What information should I include in a business plan?",
    "How can I help my child with homework without doing it for them?",
    "Can you generate a list of ten creative writing prompts?",
    "What are the most important skills for a nurse?",
    "How do I create a strong password that I can remember?",
    "What is the first thing I should do after a car accident?",
    "How do I ensure my website is accessible to everyone?",
    "Is it possible to learn a language in three months?",
    "What is an appropriate gift for a coworker's farewell?",
    "How do I give respectful feedback to a colleague?",
    "What makes some people happy in their jobs?",
    "How do I deal with a question I cannot answer in an interview?",
    "What are two ways to improve my handwriting?",
]


def make_prompts(seed: int) -> list[str]:
    """All prompts, deduplicated, in a fixed shuffled order (depends only on `seed`)."""
    rng = random.Random(seed)
    prompts = list(SINGLES) + list(WRITING_TASKS)
    groups = [(COOKING, COOKING_T), (TRAVEL, TRAVEL_T), (SCIENCE, SCIENCE_T), (HISTORY, HISTORY_T),
              (CODE_TASKS, CODE_TASKS_T), (TECH, TECH_T), (HEALTH, HEALTH_T), (MONEY, MONEY_T),
              (EVERYDAY, EVERYDAY_T), (WRITING_SUBJECTS, WRITING_T)]
    for topics, templates in groups:
        for t in topics:
            # each topic with about half of its group's templates, chosen at random (fixed seed)
            k = max(3, (len(templates) + 1) // 2)
            for tpl in rng.sample(templates, k):
                p = tpl.format(t=t)
                prompts.append(p[0].upper() + p[1:])
    for a, b in PAIRS:
        for tpl in rng.sample(PAIRS_T, 3):
            p = tpl.format(a=a, b=b)
            prompts.append(p[0].upper() + p[1:])
    seen, out = set(), []
    for p in prompts:
        p = " ".join(p.split())
        if p not in seen:
            seen.add(p)
            out.append(p)
    rng.shuffle(out)
    return out
