"""Prints the nnmark/PyTorch ratio table from the two JSON reports."""
import json
import sys


def mib_text(v):
    """A row's peak resident memory (MiB), or "-" where the side did not measure it."""
    return "-" if v is None else f"{v:.0f}"


if sys.argv[1] == "--sweep":
    r = json.loads(sys.argv[2])
    print(f"frontier stitching, epsilon x key size on the MLP (nnmark only); clean accuracy {r['clean_accuracy']*100:.2f}%")
    print(f"{'epsilon':>8}{'items':>6}{'epochs':>7}{'key':>6}{'acc pp':>8}{'indep.':>8}{'s':>7}")
    for x in r["rows"]:
        if "error" in x:
            print(f"{round(x['epsilon'], 4):>8}{x['items']:>6}  {x['error']}")
        else:
            print(f"{round(x['epsilon'], 4):>8}{x['items']:>6}{x['epochs']:>7}{x['key_match']*100:>5.0f}%{x['accuracy_change_pp']:>+8.2f}{x['independent_match']*100:>7.0f}%{x['seconds']:>7.1f}")
    sys.exit(0)

if sys.argv[1] == "--many":
    ours, theirs = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    print(f"nnmark {ours['version']} (burn {ours['burn']}, {ours['device']})  vs  PyTorch {theirs['version']} ({theirs['threads']} threads, {theirs['device']})")
    print(f"{'K models, 2 epochs each (8k, batch 64)':<40}{'s':>8}{'vs PyTorch one by one':>23}{'vs PyTorch vmap':>17}{'peak MiB':>10}")
    for name in ("lenet", "mlp"):
        a, b = ours["results"][f"many_{name}"], theirs["results"][f"many_{name}"]
        k = a["k"]
        rows = [(f"{k} {name}: nnmark one after another", a["sequential_s"], a.get("sequential_peak_rss_mib")),
                (f"{k} {name}: nnmark together", a["together_s"], a.get("together_peak_rss_mib")),
                (f"{k} {name}: PyTorch one after another", b["sequential_s"], b.get("sequential_peak_rss_mib")),
                (f"{k} {name}: PyTorch torch.func vmap", b["vmap_s"], b.get("vmap_peak_rss_mib"))]
        for label, t, mib in rows:
            print(f"{label:<40}{t:>8.2f}{t / b['sequential_s']:>22.2f}x{t / b['vmap_s']:>16.2f}x{mib_text(mib):>10}")
        print(f"  mean test accuracy: nnmark {a['mean_test_accuracy']*100:.2f}%, PyTorch {b['sequential_accuracy']*100:.2f}% / vmap {b['vmap_accuracy']*100:.2f}%")
    sys.exit(0)

ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"nnmark {ours['version']} (burn {ours['burn']}, {ours['device']})  vs  PyTorch {theirs['version']} ({theirs['threads']} threads, {theirs['device']})")
print(f"{'work':<34}{'nnmark s':>10}{'PyTorch s':>11}{'ratio':>8}{'peak MiB':>14}   accuracy nnmark / PyTorch")
rows = [("LeNet warm epoch (8k, batch 64)", "lenet", "warm_epoch_s"),
        ("MLP warm epoch (8k, batch 64)", "mlp", "warm_epoch_s"),
        ("FGSM input gradients (2k, LeNet)", "lenet", "fgsm_2000_s"),
        ("Adi embedding, 3 epochs total", "embed_adi", "total_s"),
        ("Adi embedding, warm epoch", "embed_adi", "warm_epoch_s"),
        ("Frontier stitching embedding (MLP)", "embed_frontier", "total_s"),
        ("AIME embedding, 3 sel. shadows", "embed_aime", "total_s"),
        ("Uchida embedding (LeNet, scratch)", "embed_uchida", "total_s")]
for label, model, key in rows:
    if model not in theirs["results"]:
        continue
    a, b = ours["results"][model][key], theirs["results"][model][key]
    accs = f"{ours['results'][model]['test_accuracy']*100:.2f}% / {theirs['results'][model]['test_accuracy']*100:.2f}%" if key == "warm_epoch_s" else ""
    if model in ("embed_frontier", "embed_aime", "embed_uchida"):
        accs = f"{ours['results'][model]['test_accuracy']*100:.2f}% / {theirs['results'][model]['test_accuracy']*100:.2f}% ({ours['results'][model]['epochs']} epochs)"
    if model == "embed_adi" and key == "total_s":
        accs = f"key match {ours['results'][model]['key_match']*100:.0f}% / {theirs['results'][model]['key_match']*100:.0f}%"
    peaks = f"{mib_text(ours['results'][model].get('peak_rss_mib'))} / {mib_text(theirs['results'][model].get('peak_rss_mib'))}"
    print(f"{label:<34}{a:>10.3f}{b:>11.3f}{a / b:>7.2f}x{peaks:>14}   {accs}")
