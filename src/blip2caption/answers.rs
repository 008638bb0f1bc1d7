//! Several prompts per sample (`prompts`): which prompts a sample is asked, and how their answers
//! become the one text buffer a sample puts on `text_src`.

/// The prompts a sample is asked, in order: `prompts` when it has any, else `prompt` alone.
pub fn effective_prompts(prompt: &str, prompts: &[String]) -> Vec<String> {
    if prompts.is_empty() {
        vec![prompt.to_owned()]
    } else {
        prompts.to_vec()
    }
}

/// The text of one sample: its answers one per line, in the order of the prompts. An answer's
/// own line breaks become spaces, so line N is always one answer; an empty answer leaves its
/// line out (a blank line would end an SRT or WebVTT cue early). "" when every answer is empty.
pub fn sample_text<'a>(answers: impl IntoIterator<Item = &'a str>) -> String {
    answers
        .into_iter()
        .map(|a| a.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prompts_take_the_place_of_prompt_when_set() {
        assert_eq!(
            effective_prompts("Question: why?", &[]),
            strings(&["Question: why?"])
        );
        let both = strings(&["", "Question: how many people are there? Answer:"]);
        assert_eq!(effective_prompts("ignored", &both), both);
    }

    #[test]
    fn one_line_per_answer_in_prompt_order() {
        assert_eq!(sample_text(["a parked car", "2"]), "a parked car\n2");
        assert_eq!(sample_text(["a parked car"]), "a parked car");
        // Line breaks and runs of spaces inside an answer do not make extra lines.
        assert_eq!(
            sample_text(["a car\nin the\r\nrain ", " two  people"]),
            "a car in the rain\ntwo people"
        );
        // Empty answers leave no blank line.
        assert_eq!(sample_text(["", "yes", "  "]), "yes");
        assert_eq!(sample_text(["", " "]), "");
    }
}
