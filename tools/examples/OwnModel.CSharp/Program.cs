// Trains a TorchSharp nn.Sequential 784-20-10 sigmoid on MNIST for 200 steps with the pretrained MNIST
// optimizer and with torch.optim.Adam (lr 0.03), the same θ_0 and minibatches for both, and prints the
// loss of each on the 10,000 held-out training images: last line `RESULT learned=<x> adam=<y>`.
//   dotnet run -c Release --project tools/examples/OwnModel.CSharp
using System.Diagnostics;
using System.Globalization;
using L2L;
using TorchSharp;
using static TorchSharp.torch;

try
{
    Toolkit.Configure(threads: 2);
    var data = Toolkit.Mnist();
    var train = (x: data.TrainX.narrow(0, 0, 50000), y: data.TrainY.narrow(0, 0, 50000));
    var held = (x: data.TrainX.narrow(0, 50000, 10000), y: data.TrainY.narrow(0, 50000, 10000));

    double Train(string name, Func<nn.Module<Tensor, Tensor>, optim.Optimizer> makeOptimizer)
    {
        using var model = nn.Sequential(nn.Linear(784, 20), nn.Sigmoid(), nn.Linear(20, 10));
        // θ_0 ~ N(0, 0.01²): the initialisation the optimizer was meta-trained with
        using (var gen = new Generator(1))
        using (no_grad())
            foreach (var p in model.parameters())
                p.normal_(0.0, 0.01, generator: gen);
        using var opt = makeOptimizer(model);
        using var batches = new Generator(2);
        var sw = Stopwatch.StartNew();
        for (var t = 1; t <= 200; t++)
        {
            using var scope = NewDisposeScope();
            var idx = randint(50000, new long[] { 128 }, generator: batches);
            var x = Mnist.scale(ScalarType.Float32, train.x.index_select(0, idx));
            opt.zero_grad();
            var loss = nn.functional.cross_entropy(model.forward(x), train.y.index_select(0, idx));
            loss.backward();
            opt.step();
        }
        using (no_grad())
        using (NewDisposeScope())
        {
            var logits = model.forward(Mnist.scale(ScalarType.Float32, held.x));
            var loss = nn.functional.cross_entropy(logits, held.y).ToDouble();
            var acc = logits.argmax(1).eq(held.y).to_type(ScalarType.Float32).mean().ToDouble();
            Console.WriteLine(string.Format(CultureInfo.InvariantCulture,
                "{0,-8} after 200 steps ({1:F2} s): loss {2:F4}, accuracy {3:F2}% on the 10,000 held-out images",
                name, sw.Elapsed.TotalSeconds, loss, 100 * acc));
            return loss;
        }
    }

    var learned = Train("learned", m => LearnedOptimizer.Pretrained("mnist", m.parameters()));
    var adam = Train("adam", m => optim.Adam(m.parameters(), lr: 0.03));
    Console.WriteLine(string.Format(CultureInfo.InvariantCulture, "RESULT learned={0:F6} adam={1:F6}", learned, adam));
    return 0;
}
catch (Exception e) when (e is InvalidDataException or ArgumentException)
{
    Console.Error.WriteLine($"own-model: {e.Message.Split('\n')[0].Trim()}");
    return 2;
}
