"""Prints the nnmark/PyTorch ratio table from the two JSON reports."""
import json
import sys

ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"nnmark {ours['version']} (burn {ours['burn']}, {ours['device']})  vs  PyTorch {theirs['version']} ({theirs['threads']} threads, {theirs['device']})")
print(f"{'work':<34}{'nnmark s':>10}{'PyTorch s':>11}{'ratio':>8}   accuracy nnmark / PyTorch")
rows = [("LeNet warm epoch (8k, batch 64)", "lenet", "warm_epoch_s"),
        ("MLP warm epoch (8k, batch 64)", "mlp", "warm_epoch_s"),
        ("FGSM input gradients (2k, LeNet)", "lenet", "fgsm_2000_s"),
        ("Adi embedding, 3 epochs total", "embed_adi", "total_s"),
        ("Adi embedding, warm epoch", "embed_adi", "warm_epoch_s")]
for label, model, key in rows:
    a, b = ours["results"][model][key], theirs["results"][model][key]
    accs = f"{ours['results'][model]['test_accuracy']*100:.2f}% / {theirs['results'][model]['test_accuracy']*100:.2f}%" if key == "warm_epoch_s" else ""
    if model == "embed_adi" and key == "total_s":
        accs = f"key match {ours['results'][model]['key_match']*100:.0f}% / {theirs['results'][model]['key_match']*100:.0f}%"
    print(f"{label:<34}{a:>10.3f}{b:>11.3f}{a / b:>7.2f}x   {accs}")
