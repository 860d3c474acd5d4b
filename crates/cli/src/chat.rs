//! `credence chat`: a conversation with a running node, streamed to stdout.
//!
//! Each line read from stdin is one user turn; the whole conversation so far
//! is sent with it, so the model sees the history. On a terminal it is an
//! interactive prompt; with piped input (`echo hi | credence chat`) it
//! answers each line and exits at the end of input.

use std::io::{BufRead, IsTerminal, Write};
use std::ops::ControlFlow;

use anyhow::{Context, Result, bail};
use clap::Args;
use credence_node::client::{AdapterWeight, ChatMessage, ChatParams, ClientConfig, NodeClient};

#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    #[command(flatten)]
    connect: ClientConfig,
    /// Adapter id or alias to answer with; repeat to compose several.
    #[arg(long = "adapter", value_name = "NAME")]
    adapters: Vec<String>,
    /// Weight of each --adapter, in the same order [default: 1.0 each].
    #[arg(long = "weight", value_name = "W", allow_negative_numbers = true)]
    weights: Vec<f32>,
    /// System prompt that opens the conversation.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens per answer [default: the node's].
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Sampling temperature (0 = greedy) [default: the node's].
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Random seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Pay for calls to priced adapters: sign a voucher with each turn
    /// allowing up to this much OPEN beyond what has been spent.
    #[arg(long, value_name = "OPEN")]
    pay: Option<String>,
    /// Pay with dev account N of the public dev mnemonic instead of <home>/wallet.key.
    #[arg(long, value_name = "N", requires = "pay")]
    dev_account: Option<u32>,
}

/// What one input line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input<'a> {
    Blank,
    Reset,
    Exit,
    Say(&'a str),
}

impl<'a> Input<'a> {
    fn parse(line: &'a str) -> Self {
        match line.trim() {
            "" => Self::Blank,
            "/reset" => Self::Reset,
            "/exit" | "/quit" => Self::Exit,
            text => Self::Say(text),
        }
    }
}

/// The conversation: an optional system prompt, then alternating turns.
struct Conversation {
    system: Option<String>,
    messages: Vec<ChatMessage>,
}

impl Conversation {
    fn new(system: Option<String>) -> Self {
        let mut conversation = Self {
            system,
            messages: Vec::new(),
        };
        conversation.reset();
        conversation
    }

    /// Forgets every turn but keeps the system prompt.
    fn reset(&mut self) {
        self.messages.clear();
        if let Some(system) = &self.system {
            self.messages
                .push(ChatMessage::new("system", system.clone()));
        }
    }
}

/// Runs the chat until `/exit`, end of input or a closed stdout.
pub(crate) fn run(args: &ChatArgs) -> Result<()> {
    let (model, params) = request_target(args)?;
    let client = NodeClient::from_config(&args.connect)?;
    let payer = match &args.pay {
        None => None,
        Some(allowance) => {
            let wallet = crate::pay::wallet(args.connect.home.as_deref(), args.dev_account)?
                .context(
                    "--pay needs a wallet: run `credence wallet new`, or pass --dev-account N",
                )?;
            Some(crate::pay::Payer::new(&client, wallet, allowance)?)
        }
    };
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!(
            "chatting with {} at {}; /reset clears the history, /exit or Ctrl-D quits",
            describe(&model, &params),
            client.url()
        );
    }
    let mut conversation = Conversation::new(args.system.clone());
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("cannot read standard input")?;
        match Input::parse(&line) {
            Input::Blank => {}
            Input::Exit => break,
            Input::Reset => {
                conversation.reset();
                if interactive {
                    eprintln!("(history cleared)");
                }
            }
            Input::Say(text) => {
                let turn = Turn {
                    model: model.as_deref(),
                    params: &params,
                    payer: payer.as_ref(),
                };
                match answer(&client, &mut conversation, text, &turn) {
                    Ok(ControlFlow::Continue(())) => {}
                    Ok(ControlFlow::Break(())) => break,
                    // At a prompt the user can fix the cause (start the node) and go on.
                    Err(error) if interactive => eprintln!("error: {error:#}"),
                    Err(error) => return Err(error),
                }
            }
        }
    }
    if interactive {
        eprintln!();
    }
    Ok(())
}

/// Sends `text` after the history and streams the answer to stdout; breaks
/// when stdout is closed. A failed turn leaves the history as it was.
fn answer(
    client: &NodeClient,
    conversation: &mut Conversation,
    text: &str,
    turn: &Turn<'_>,
) -> Result<ControlFlow<()>> {
    let (model, params) = (turn.model, turn.params);
    let paying;
    let client = match turn.payer {
        Some(payer) => {
            paying = client
                .clone()
                .with_voucher(Some(payer.next_voucher(client)?));
            &paying
        }
        None => client,
    };
    conversation.messages.push(ChatMessage::new("user", text));
    let mut stdout = std::io::stdout().lock();
    let result = client.chat_stream(model, &conversation.messages, params, &mut |delta| {
        // A closed stdout (e.g. `| head`) ends the chat rather than failing it.
        match stdout
            .write_all(delta.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    });
    let reply = match result {
        Ok(reply) => reply,
        Err(error) => {
            conversation.messages.pop();
            return Err(error.into());
        }
    };
    if reply.abandoned || writeln!(stdout).and_then(|()| stdout.flush()).is_err() {
        return Ok(ControlFlow::Break(()));
    }
    if let Some(receipt) = &reply.receipt {
        eprintln!("(receipt {receipt})");
    }
    conversation
        .messages
        .push(ChatMessage::new("assistant", reply.text));
    Ok(ControlFlow::Continue(()))
}

/// What every turn of one chat sends.
struct Turn<'a> {
    model: Option<&'a str>,
    params: &'a ChatParams,
    payer: Option<&'a crate::pay::Payer>,
}

/// `model` and the composition to request: one adapter without a weight is
/// named as the model; several, or any explicit weight, become the
/// `adapters` composition on the base model.
fn request_target(args: &ChatArgs) -> Result<(Option<String>, ChatParams)> {
    if args.weights.len() > args.adapters.len() {
        bail!(
            "{} --weight values for {} --adapter names; give at most one weight per adapter",
            args.weights.len(),
            args.adapters.len()
        );
    }
    let mut params = ChatParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        seed: args.seed,
        adapters: Vec::new(),
    };
    let model = match (args.adapters.as_slice(), args.weights.is_empty()) {
        ([], _) => None,
        ([only], true) => Some(only.clone()),
        (names, _) => {
            params.adapters = names
                .iter()
                .enumerate()
                .map(|(i, name)| AdapterWeight {
                    id: name.clone(),
                    weight: args.weights.get(i).copied().unwrap_or(1.0),
                })
                .collect();
            None
        }
    };
    Ok((model, params))
}

/// What is answering, for the greeting.
fn describe(model: &Option<String>, params: &ChatParams) -> String {
    match model {
        Some(adapter) => format!("adapter {adapter}"),
        None if params.adapters.is_empty() => "the base model".to_owned(),
        None => {
            let parts: Vec<String> = params
                .adapters
                .iter()
                .map(|a| format!("{}×{}", a.weight, a.id))
                .collect();
            format!("the base model with {}", parts.join(" + "))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        chat: ChatArgs,
    }

    fn target(args: &[&str]) -> Result<(Option<String>, ChatParams)> {
        let cli = TestCli::try_parse_from(std::iter::once("chat").chain(args.iter().copied()))
            .expect("valid flags");
        request_target(&cli.chat)
    }

    #[test]
    fn one_adapter_is_the_model_and_several_are_a_weighted_composition() {
        let (model, params) = target(&[]).expect("base");
        assert_eq!((model, params.adapters.len()), (None, 0));

        let (model, params) = target(&["--adapter", "style"]).expect("one");
        assert_eq!(model.as_deref(), Some("style"));
        assert!(params.adapters.is_empty());

        let (model, params) =
            target(&["--adapter", "a", "--adapter", "b", "--weight", "-0.5"]).expect("two");
        assert_eq!(model, None);
        let weights: Vec<(&str, f32)> = params
            .adapters
            .iter()
            .map(|a| (a.id.as_str(), a.weight))
            .collect();
        assert_eq!(weights, vec![("a", -0.5), ("b", 1.0)]);

        let (model, params) = target(&["--adapter", "a", "--weight", "2"]).expect("weighted");
        assert_eq!((model, params.adapters.len()), (None, 1));

        assert!(target(&["--weight", "2"]).is_err());
    }

    #[test]
    fn commands_are_whole_lines_and_history_keeps_the_system_prompt() {
        assert_eq!(Input::parse("  /reset "), Input::Reset);
        assert_eq!(Input::parse("/exit"), Input::Exit);
        assert_eq!(Input::parse("   "), Input::Blank);
        assert_eq!(Input::parse("/resetting"), Input::Say("/resetting"));

        let mut conversation = Conversation::new(Some("Be brief.".into()));
        conversation.messages.push(ChatMessage::new("user", "hi"));
        conversation.reset();
        assert_eq!(
            conversation.messages,
            vec![ChatMessage::new("system", "Be brief.")]
        );
    }
}
