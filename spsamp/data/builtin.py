"""The built-in prompt set: 16 two-turn questions, two per MT-Bench category, written for spsamp.

Written for this project (not taken from MT-Bench) so the default run needs no dataset file. Ids
are stable strings; changing a prompt's text must change its id, or resumed runs would mix them.
"""

from __future__ import annotations

BUILTIN_PROMPTS: list[dict] = [
    {"id": "writing-1", "category": "writing", "turns": [
        "Write a short, friendly note to a neighbour asking them to water your plants while you travel for a week.",
        "Now make the note half as long without losing any request."]},
    {"id": "writing-2", "category": "writing", "turns": [
        "Write a four-line poem about the first snow of winter in a small town.",
        "Rewrite the poem so that every line rhymes with 'light'."]},
    {"id": "roleplay-1", "category": "roleplay", "turns": [
        "You are a museum guide in front of an old steam engine. Greet a group of schoolchildren and explain what they are looking at.",
        "A child asks why the engine needed so much coal. Answer in character."]},
    {"id": "roleplay-2", "category": "roleplay", "turns": [
        "Pretend you are a ship's cook in 1850 describing a typical day's meals at sea.",
        "The captain complains about the food. How do you reply?"]},
    {"id": "reasoning-1", "category": "reasoning", "turns": [
        "Anna is taller than Ben. Ben is taller than Carl. Is Carl taller than Anna? Explain step by step.",
        "If Dana is shorter than Carl, who is the second tallest of the four?"]},
    {"id": "reasoning-2", "category": "reasoning", "turns": [
        "A farmer has 3 fields. Each field has 4 rows of 5 apple trees. Half of the trees are in bloom. How many trees are in bloom?",
        "If each tree in bloom gives 30 apples, how many apples does the farmer get?"]},
    {"id": "math-1", "category": "math", "turns": [
        "What is 17 multiplied by 23? Show your working.",
        "Now divide the result by 7 and give the remainder."]},
    {"id": "math-2", "category": "math", "turns": [
        "Solve for x: 3x + 7 = 25.",
        "Check your answer by substituting it back into the equation."]},
    {"id": "coding-1", "category": "coding", "turns": [
        "Write a Python function that returns the n-th Fibonacci number iteratively.",
        "Add a docstring and a check that n is a non-negative integer."]},
    {"id": "coding-2", "category": "coding", "turns": [
        "Write a Python function that checks whether a string is a palindrome, ignoring spaces and case.",
        "Write three unit tests for that function with pytest."]},
    {"id": "extraction-1", "category": "extraction", "turns": [
        "Extract the names and ages from this text as a JSON list: 'Maria, 34, met Tom, 29, and their friend Lee, who is 41.'",
        "Sort the list by age, oldest first."]},
    {"id": "extraction-2", "category": "extraction", "turns": [
        "From the sentence 'The meeting moved from Tuesday 3 May at 10:00 to Friday 6 May at 14:30 in room B12', extract the old date, the new date, the new time and the room.",
        "Format your answer as a table."]},
    {"id": "stem-1", "category": "stem", "turns": [
        "Explain in simple terms why the sky is blue.",
        "Then why are sunsets red or orange?"]},
    {"id": "stem-2", "category": "stem", "turns": [
        "What is the difference between a virus and a bacterium?",
        "Why do antibiotics not work against viruses?"]},
    {"id": "humanities-1", "category": "humanities", "turns": [
        "Summarise the main causes of the French Revolution in a few sentences.",
        "Which of these causes do you think mattered most, and why?"]},
    {"id": "humanities-2", "category": "humanities", "turns": [
        "What is the difference between a democracy and a republic?",
        "Give one historical example of each."]},
]
